package runtime

import (
	"encoding/binary"
	"fmt"
	"math"
	"sort"
	"unsafe"
)

// kernel is the Extism kernel of one instance: a Go-side arena that the guest addresses through
// handles (offsets) and that holds the call's input, output, error message and whatever the host
// services hand to the guest. It is reset before each call. Only the goroutine running a call of
// the instance touches it.
//
// A handle is arenaBase plus the byte's index in mem, so that 0 is never a valid handle and means
// "none", as in Extism. Block metadata lives in blocks, outside the arena, so that a guest writing
// through store_u8/store_u64 cannot corrupt the allocator.
type kernel struct {
	mem    []byte  // len(mem) is the allocated extent ("position"); cap(mem) the arena's size
	blocks []block // sorted by off
	nfree  int     // blocks with free set

	// The input is either the caller's slice (external, read without copying) or a range of the
	// arena (after input_offset or input_set).
	extInput    []byte
	extCharge   uint64 // what extInput is charged to the budget
	inputHandle uint64 // 0 while the input is external
	inputLen    uint64

	outHandle, outLen uint64
	errHandle         uint64

	budget *memBudget
}

type block struct {
	off  uint64 // index in mem of the first data byte
	size uint64 // bytes reserved
	used uint64 // bytes requested by the last alloc that took this block
	free bool
}

// arenaBase is the handle of the arena's first byte.
const arenaBase = 1

// maxArenaBytes keeps every handle representable in 32 bits, for guests that store them in i32s.
const maxArenaBytes = 1<<32 - 1<<16

// memBudget is an instance's memory limit, Limits.MaxMemoryBytes, shared by everything a guest can
// make the host hold for it: its linear memory, its tables (their maximum, reserved when the
// instance is made), the kernel arena and the records of its blocks, vars, and the call's input
// while it is read in place. RATIONALE.md, "Why one memory budget per instance?", lists what it
// does not cover.
type memBudget struct {
	max   uint64 // 0: no limit
	guest uint64 // capacity Go holds for the guest's linear memory (at least its size)
	arena uint64 // kernel arena capacity plus block records
	other uint64 // tables' reservation, vars, the external input
}

func (b *memBudget) fits(guest, arena uint64) bool {
	return b.max == 0 || guest+arena+b.other <= b.max
}

// left is what the budget still allows, or math.MaxInt64 without a limit.
func (b *memBudget) left() uint64 {
	if b.max == 0 {
		return math.MaxInt64
	}
	if used := b.guest + b.arena + b.other; used < b.max {
		return b.max - used
	}
	return 0
}

// charge adds n to the other uses if it fits, and reports whether it did.
func (b *memBudget) charge(n uint64) bool {
	if n > b.left() {
		return false
	}
	b.other += n
	return true
}

// blockRecordBytes is what the kernel keeps per block besides its bytes (a block struct), charged to
// the budget so that alloc(1) in a loop cannot grow Go memory past it.
const blockRecordBytes = uint64(unsafe.Sizeof(block{}))

// charge recomputes the arena's part of the budget.
func (k *kernel) charge() {
	k.budget.arena = uint64(cap(k.mem)) + uint64(cap(k.blocks))*blockRecordBytes
}

// kernelFault is the panic value of a kernel or host function that refuses a guest's request;
// wazero turns it into the error of the call.
type kernelFault struct {
	fn    string
	msg   string
	cause error // for errors.Is, such as ErrOutputTooLarge
}

func (f *kernelFault) Error() string { return "extism:host/env." + f.fn + ": " + f.msg }
func (f *kernelFault) Unwrap() error { return f.cause }

func fault(fn, format string, args ...any) {
	panic(&kernelFault{fn: fn, msg: fmt.Sprintf(format, args...)})
}

// reset empties the arena and clears input, output and error, as Extism's reset does. Bytes are
// zeroed when they are handed out again, not here.
func (k *kernel) reset() {
	k.mem = k.mem[:0]
	k.blocks = k.blocks[:0]
	k.nfree = 0
	k.dropExtInput()
	k.inputHandle, k.inputLen = 0, 0
	k.outHandle, k.outLen = 0, 0
	k.errHandle = 0
}

// release drops a large arena or block list after a call so that an idle pooled instance does not
// keep it.
func (k *kernel) release() {
	if cap(k.mem) > 4<<20 {
		k.mem = nil
	}
	if cap(k.blocks) > 4096 {
		k.blocks = nil
	}
	k.charge()
}

// alloc reserves n bytes and returns their handle, or 0 when n is 0 or the memory limit is
// reached. Fresh bytes are zeroed so that nothing of an earlier call is visible.
func (k *kernel) alloc(n uint64) uint64 {
	if n == 0 {
		return 0
	}
	if k.nfree > 0 {
		for i := range k.blocks {
			b := &k.blocks[i]
			if b.free && b.size >= n {
				b.free = false
				b.used = n
				k.nfree--
				return arenaBase + b.off
			}
		}
	}
	off := uint64(len(k.mem))
	end := off + n
	if end < off || end > maxArenaBytes {
		return 0
	}
	if end > uint64(cap(k.mem)) {
		newCap := max(end, 2*uint64(cap(k.mem)), 1024)
		if newCap > maxArenaBytes {
			newCap = maxArenaBytes
		}
		records := uint64(cap(k.blocks)) * blockRecordBytes
		if !k.budget.fits(k.budget.guest, newCap+records) {
			newCap = end
			if !k.budget.fits(k.budget.guest, newCap+records) {
				return 0
			}
		}
		mem := make([]byte, off, newCap)
		copy(mem, k.mem)
		k.mem = mem
		k.charge()
	}
	if len(k.blocks) == cap(k.blocks) {
		newCap := max(2*cap(k.blocks), 16)
		if !k.budget.fits(k.budget.guest, uint64(cap(k.mem))+uint64(newCap)*blockRecordBytes) {
			return 0
		}
		k.blocks = append(make([]block, 0, newCap), k.blocks...)
		k.charge()
	}
	k.mem = k.mem[:end]
	clear(k.mem[off:end])
	k.blocks = append(k.blocks, block{off: off, size: n, used: n})
	return arenaBase + off
}

// find returns the index of the live block whose data starts at handle h, or -1.
func (k *kernel) find(h uint64) int {
	if h < arenaBase {
		return -1
	}
	off := h - arenaBase
	i := sort.Search(len(k.blocks), func(i int) bool { return k.blocks[i].off >= off })
	if i < len(k.blocks) && k.blocks[i].off == off && !k.blocks[i].free {
		return i
	}
	return -1
}

// free releases the block at h; other handles are ignored, as Extism does. Freeing the last
// blocks gives their bytes back to the bump allocator.
func (k *kernel) free(h uint64) {
	i := k.find(h)
	if i < 0 {
		return
	}
	k.blocks[i].free = true
	k.nfree++
	if h == k.inputHandle {
		k.inputLen = 0
	}
	for n := len(k.blocks); n > 0 && k.blocks[n-1].free; n = len(k.blocks) {
		k.mem = k.mem[:k.blocks[n-1].off]
		k.blocks = k.blocks[:n-1]
		k.nfree--
	}
}

// length returns the size requested for the block at h, or 0 when h is not a live block.
func (k *kernel) length(h uint64) uint64 {
	if i := k.find(h); i >= 0 {
		return k.blocks[i].used
	}
	return 0
}

// bytes returns the live block at h without copying. Handle 0 is the empty block; any other
// handle that is not a live block faults.
func (k *kernel) bytes(fn string, h uint64) []byte {
	if h == 0 {
		return nil
	}
	i := k.find(h)
	if i < 0 {
		fault(fn, "%d is not the handle of an allocated block", h)
	}
	b := k.blocks[i]
	return k.mem[b.off : b.off+b.used]
}

// put copies p into a new block and returns its handle; 0 for an empty p.
func (k *kernel) put(fn string, p []byte) uint64 {
	if len(p) == 0 {
		return 0
	}
	h := k.alloc(uint64(len(p)))
	if h == 0 {
		fault(fn, "out of memory: cannot allocate %d bytes of kernel memory", len(p))
	}
	copy(k.mem[h-arenaBase:], p)
	return h
}

// span returns the arena index of [h, h+n), faulting when the range is not inside the allocated
// extent. Reading beyond it could reveal bytes of an earlier call.
func (k *kernel) span(fn string, h, n uint64) uint64 {
	off := h - arenaBase
	if h < arenaBase || off >= uint64(len(k.mem)) || n > uint64(len(k.mem))-off {
		fault(fn, "offset %d, length %d is out of bounds (kernel memory in use: %d bytes from offset %d)",
			h, n, len(k.mem), arenaBase)
	}
	return off
}

func (k *kernel) loadU8(h uint64) uint32 {
	return uint32(k.mem[k.span("load_u8", h, 1)])
}

func (k *kernel) loadU64(h uint64) uint64 {
	off := k.span("load_u64", h, 8)
	return binary.LittleEndian.Uint64(k.mem[off:])
}

func (k *kernel) storeU8(h uint64, v byte) {
	k.mem[k.span("store_u8", h, 1)] = v
}

func (k *kernel) storeU64(h uint64, v uint64) {
	off := k.span("store_u64", h, 8)
	binary.LittleEndian.PutUint64(k.mem[off:], v)
}

// setExtInput makes in the call's input, read in place and charged to the budget as if it were
// copied into the arena, as Extism counts it. It reports false, setting nothing, when it does not fit.
func (k *kernel) setExtInput(in []byte) bool {
	if !k.budget.charge(uint64(len(in))) {
		return false
	}
	k.extInput, k.extCharge = in, uint64(len(in))
	return true
}

func (k *kernel) dropExtInput() {
	k.budget.other -= k.extCharge
	k.extInput, k.extCharge = nil, 0
}

// inputBytes returns the current input without copying.
func (k *kernel) inputBytes() []byte {
	if k.inputHandle == 0 {
		return k.extInput
	}
	off := k.inputHandle - arenaBase
	if off+k.inputLen > uint64(len(k.mem)) { // freed and given back since
		return nil
	}
	return k.mem[off : off+k.inputLen]
}

func (k *kernel) inputLength() uint64 {
	if k.inputHandle == 0 {
		return uint64(len(k.extInput))
	}
	return k.inputLen
}

// inputLoadU8 returns the input's byte at off, or 0 past its end, as Extism's kernel does.
func (k *kernel) inputLoadU8(off uint64) uint32 {
	in := k.inputBytes()
	if off >= uint64(len(in)) {
		return 0
	}
	return uint32(in[off])
}

// inputLoadU64 returns the 8 input bytes at off, little-endian; bytes past the input's end read as
// 0, as Extism's kernel does.
func (k *kernel) inputLoadU64(off uint64) uint64 {
	in := k.inputBytes()
	if off >= uint64(len(in)) {
		return 0
	}
	if uint64(len(in))-off < 8 {
		var b [8]byte
		copy(b[:], in[off:])
		return binary.LittleEndian.Uint64(b[:])
	}
	return binary.LittleEndian.Uint64(in[off:])
}

// inputOffset returns the handle of the input, copying it into the arena the first time a guest
// asks: most guests read the input with input_load_* and never need the copy.
func (k *kernel) inputOffset() uint64 {
	if k.inputHandle != 0 || len(k.extInput) == 0 {
		return k.inputHandle
	}
	n := uint64(len(k.extInput))
	ext := k.extInput
	k.dropExtInput() // the copy in the arena takes over the input's charge
	h := k.alloc(n)
	if h == 0 {
		fault("input_offset", "out of memory: cannot copy the %d-byte input into kernel memory", n)
	}
	copy(k.mem[h-arenaBase:], ext)
	k.inputHandle, k.inputLen = h, n
	return h
}

func (k *kernel) inputSet(h, n uint64) {
	if n == 0 {
		k.dropExtInput()
		k.inputHandle, k.inputLen = 0, 0
		return
	}
	k.span("input_set", h, n)
	k.dropExtInput()
	k.inputHandle, k.inputLen = h, n
}

func (k *kernel) outputSet(h, n, limit uint64) {
	if n == 0 {
		k.outHandle, k.outLen = 0, 0
		return
	}
	if limit > 0 && n > limit {
		panic(&kernelFault{fn: "output_set", cause: ErrOutputTooLarge,
			msg: fmt.Sprintf("%v: %d bytes, over the limit of %d (limits.maxOutputBytes)", ErrOutputTooLarge, n, limit)})
	}
	k.span("output_set", h, n)
	k.outHandle, k.outLen = h, n
}

// output returns the output range without copying; it is valid until the next reset.
func (k *kernel) output() []byte {
	if k.outLen == 0 {
		return nil
	}
	off := k.outHandle - arenaBase
	if off+k.outLen > uint64(len(k.mem)) { // freed and reused since output_set
		return nil
	}
	return k.mem[off : off+k.outLen]
}

func (k *kernel) errorSet(h uint64) {
	if h != 0 {
		k.span("error_set", h, 1)
	}
	k.errHandle = h
}

// errorText returns the error message the guest set, or "" when none is set or the handle is not
// a live block, which is how Extism reads it.
func (k *kernel) errorText() string {
	if k.errHandle == 0 {
		return ""
	}
	i := k.find(k.errHandle)
	if i < 0 {
		return ""
	}
	b := k.blocks[i]
	return string(k.mem[b.off : b.off+b.used])
}
