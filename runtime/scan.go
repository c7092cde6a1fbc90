package runtime

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// shape is what a module declares that decides what it can take before any of it runs: its own
// memories and tables (exported or not), and the size of its code. scan reads it from the binary
// in one pass over the section headers, without decoding instructions, so it is cheap enough to run
// before compiling untrusted bytes.
type shape struct {
	memories []limits // defined in the module (imports are refused elsewhere)
	tables   []limits
	funcs    int    // defined functions
	maxBody  int    // largest function body, in bytes
	maxBodyI int    // its index among the defined functions
	locals   uint64 // most locals declared by one function
	localsI  int
	code     int // bytes of the code section

	tableSec   [2]int // offsets of the table section, id byte to end; zero without one
	tableTypes [][]byte
}

type limits struct {
	min    uint64
	max    uint64
	hasMax bool
}

var errTruncated = errors.New("unexpected end")

type reader struct {
	b   []byte
	err error
}

func (r *reader) byte() byte {
	if r.err != nil || len(r.b) == 0 {
		r.err = errTruncated
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) u32() uint32 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 || n > 5 || v > 1<<32-1 {
		r.err = errTruncated
		return 0
	}
	r.b = r.b[n:]
	return uint32(v)
}

func (r *reader) u64() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errTruncated
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) bytes(n uint64) []byte {
	if r.err != nil || uint64(len(r.b)) < n {
		r.err = errTruncated
		return nil
	}
	p := r.b[:n]
	r.b = r.b[n:]
	return p
}

func (r *reader) limits() limits {
	flags := r.byte()
	var l limits
	if flags&0x04 != 0 { // memory64: 64-bit limits
		l.min = r.u64()
		if flags&1 != 0 {
			l.max, l.hasMax = r.u64(), true
		}
		return l
	}
	l.min = uint64(r.u32())
	if flags&1 != 0 {
		l.max, l.hasMax = uint64(r.u32()), true
	}
	return l
}

// scan reads a module's shape. A module it cannot read is left to the compiler to explain, so
// errors here say only where reading stopped.
func scan(wasm []byte) (shape, error) {
	var s shape
	r := &reader{b: wasm}
	if hdr := r.bytes(8); r.err != nil || string(hdr[:4]) != "\x00asm" {
		return s, errors.New("not a WebAssembly binary")
	}
	for len(r.b) > 0 && r.err == nil {
		start := len(wasm) - len(r.b)
		id := r.byte()
		size := r.u32()
		body := &reader{b: r.bytes(uint64(size))}
		if r.err != nil {
			break
		}
		switch id {
		case 4: // tables
			s.tableSec = [2]int{start, len(wasm) - len(r.b)}
			for n := body.u32(); n > 0 && body.err == nil; n-- {
				ref := body.byte()
				s.tableTypes = append(s.tableTypes, []byte{ref})
				s.tables = append(s.tables, body.limits())
			}
		case 5: // memories
			for n := body.u32(); n > 0 && body.err == nil; n-- {
				s.memories = append(s.memories, body.limits())
			}
		case 10: // code
			s.code = int(size)
			n := int(body.u32())
			s.funcs = n
			for i := 0; i < n && body.err == nil; i++ {
				fsize := body.u32()
				f := &reader{b: body.bytes(uint64(fsize))}
				if int(fsize) > s.maxBody {
					s.maxBody, s.maxBodyI = int(fsize), i
				}
				var locals uint64
				for m := f.u32(); m > 0 && f.err == nil; m-- {
					locals += uint64(f.u32())
					f.byte()
				}
				if locals > s.locals {
					s.locals, s.localsI = locals, i
				}
			}
		}
		if body.err != nil {
			return s, fmt.Errorf("section %d: %w", id, body.err)
		}
	}
	if r.err != nil {
		return s, r.err
	}
	return s, nil
}

// tableEntryBytes is what wazero keeps per table entry (a uintptr), and what each entry a module may
// have is charged to Limits.MaxMemoryBytes.
const tableEntryBytes = 8

// pageBytes is the size of a WebAssembly memory page.
const pageBytes = 1 << 16

// boundTables returns wasm with every table that declares no maximum given its minimum as maximum,
// or wasm itself when there is none. wazero grows a table by allocating its new entries at once, so
// a table.grow by 2^32-2 entries would end the process with a fatal out-of-memory error; a growth
// past a maximum fails inside the guest instead (table.grow returns -1), as WebAssembly allows.
// Compilers emit tables of a fixed size unless they link dynamically (Go, LLVM, GHC), so
// existing plugins do not notice.
func boundTables(wasm []byte, s *shape) []byte {
	unbounded := false
	for _, t := range s.tables {
		unbounded = unbounded || !t.hasMax
	}
	if !unbounded {
		return wasm
	}
	body := binary.AppendUvarint(nil, uint64(len(s.tables)))
	for i, t := range s.tables {
		body = append(body, s.tableTypes[i]...)
		if !t.hasMax {
			s.tables[i].max, s.tables[i].hasMax = t.min, true
		}
		body = append(body, 1)
		body = binary.AppendUvarint(body, t.min)
		body = binary.AppendUvarint(body, s.tables[i].max)
	}
	out := make([]byte, 0, len(wasm)+len(body))
	out = append(out, wasm[:s.tableSec[0]]...)
	out = append(out, 4)
	out = binary.AppendUvarint(out, uint64(len(body)))
	out = append(out, body...)
	return append(out, wasm[s.tableSec[1]:]...)
}

// tableBytes is what the module's tables may take at their maximum.
func (s *shape) tableBytes() uint64 {
	var n uint64
	for _, t := range s.tables {
		n += t.max * tableEntryBytes
	}
	return n
}

// minMemoryBytes is what the module's memories take when it is instantiated.
func (s *shape) minMemoryBytes() uint64 {
	var n uint64
	for _, m := range s.memories {
		n += m.min * pageBytes
	}
	return n
}
