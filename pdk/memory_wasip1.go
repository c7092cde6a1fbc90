//go:build wasip1

package pdk

import (
	"encoding/binary"
	"strconv"
)

// allocBytes copies data into a new kernel memory block and returns its
// offset, or 0 for empty data (the kernel has no empty blocks).
func allocBytes(data []byte) uint64 {
	if len(data) == 0 {
		return 0
	}
	offset := hostAlloc(uint64(len(data)))
	if offset == 0 {
		// The kernel is out of memory. Writing at offset 0 would corrupt
		// its bookkeeping, so stop the call instead.
		panic("pdk: host could not allocate " + strconv.Itoa(len(data)) + " bytes of kernel memory")
	}
	store(offset, data)
	return offset
}

func allocString(s string) uint64 {
	return allocBytes([]byte(s))
}

// store copies data to kernel memory at offset, eight bytes per host call
// where it can.
func store(offset uint64, data []byte) {
	i := 0
	for ; i+8 <= len(data); i += 8 {
		hostStoreU64(offset+uint64(i), binary.LittleEndian.Uint64(data[i:]))
	}
	for ; i < len(data); i++ {
		hostStoreU8(offset+uint64(i), uint32(data[i]))
	}
}

// load copies len(buf) bytes of kernel memory at offset into buf.
func load(offset uint64, buf []byte) {
	i := 0
	for ; i+8 <= len(buf); i += 8 {
		binary.LittleEndian.PutUint64(buf[i:], hostLoadU64(offset+uint64(i)))
	}
	for ; i < len(buf); i++ {
		buf[i] = byte(hostLoadU8(offset + uint64(i)))
	}
}

// readBlock copies the kernel memory block at offset into Go memory. An
// offset of 0 or an unknown block reads as nil.
func readBlock(offset uint64) []byte {
	if offset == 0 {
		return nil
	}
	n := hostLength(offset)
	if n == 0 {
		return nil
	}
	buf := make([]byte, n)
	load(offset, buf)
	return buf
}

// takeBlock reads the block at offset and frees it: for blocks the host
// allocated for the plugin to read once.
func takeBlock(offset uint64) []byte {
	b := readBlock(offset)
	if offset != 0 {
		hostFree(offset)
	}
	return b
}
