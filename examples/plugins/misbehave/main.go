//go:build wasip1

// Command misbehave is an example plugin that does what plugins must not, so
// hosts can prove they survive it.
//
// README: each export fails in its own way, and a host must report an error
// for each without harm to itself or to other instances:
//   - loop: spins forever; only a call timeout stops it.
//   - membomb: allocates memory until growing the linear memory fails; the Go
//     runtime then aborts with an unreachable trap.
//   - oob: passes an out-of-bounds kernel offset to a host function. The input
//     names the function: load_u64 (the default), load_u8, store_u64,
//     store_u8, input_load_u64, input_load_u8, load_u64_wide (an offset above
//     4 GiB, which must not wrap around to a valid one), output_set (the call
//     returns 0 leaving an output whose offset and length are past the end)
//     or error_set (the call returns 1 leaving an error at such an offset).
//     When the host lets an access through, the call returns 0 with the output
//     "host accepted out-of-bounds <case>".
//   - hugeout: sets a 64 MiB output of 'x' bytes, written straight into
//     kernel memory so the plugin's own memory stays small. When the host
//     cannot allocate that much, the call fails with "hugeout: host could not
//     allocate 64 MiB".
//   - panic: a Go panic; the Go runtime aborts with an unreachable trap.
//
// It needs no permissions.
package main

import (
	"github.com/wasm-operator/wasm-operator/pdk"
)

// The raw kernel functions, declared here rather than taken from pdk, which
// never passes them offsets it did not get from the host.

//go:wasmimport extism:host/env alloc
func hostAlloc(length uint64) uint64

//go:wasmimport extism:host/env load_u8
func hostLoadU8(offset uint64) uint32

//go:wasmimport extism:host/env load_u64
func hostLoadU64(offset uint64) uint64

//go:wasmimport extism:host/env store_u8
func hostStoreU8(offset uint64, value uint32)

//go:wasmimport extism:host/env store_u64
func hostStoreU64(offset uint64, value uint64)

//go:wasmimport extism:host/env input_load_u8
func hostInputLoadU8(offset uint64) uint32

//go:wasmimport extism:host/env input_load_u64
func hostInputLoadU64(offset uint64) uint64

//go:wasmimport extism:host/env output_set
func hostOutputSet(offset, length uint64)

//go:wasmimport extism:host/env error_set
func hostErrorSet(offset uint64)

// spins counts loop iterations so the loop has an effect the compiler keeps.
var spins uint64

//go:wasmexport loop
func loop() int32 {
	for {
		spins++
	}
}

// hoard keeps every allocation reachable so the garbage collector cannot
// reuse it and the heap must grow.
var hoard [][]byte

//go:wasmexport membomb
func membomb() int32 {
	for {
		b := make([]byte, 1<<20)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		hoard = append(hoard, b)
	}
}

// farOffset is past the end of any kernel memory but still below 4 GiB.
const farOffset = 0xFFFF_FFF0

//go:wasmexport oob
func oob() int32 {
	which := pdk.InputString()
	switch which {
	case "", "load_u64":
		hostLoadU64(farOffset)
	case "load_u8":
		hostLoadU8(farOffset)
	case "store_u64":
		hostStoreU64(farOffset, 0x4141414141414141)
	case "store_u8":
		hostStoreU8(farOffset, 0x41)
	case "input_load_u64":
		hostInputLoadU64(farOffset)
	case "input_load_u8":
		hostInputLoadU8(farOffset)
	case "output_set":
		hostOutputSet(farOffset, 1<<20)
		return 0
	case "error_set":
		hostErrorSet(farOffset)
		return 1
	case "load_u64_wide":
		hostLoadU64(1<<40 + 8)
	default:
		pdk.SetErrorString("oob: unknown case " + which)
		return 1
	}
	pdk.OutputString("host accepted out-of-bounds " + which)
	return 0
}

//go:wasmexport hugeout
func hugeout() int32 {
	const size = 64 << 20
	offset := hostAlloc(size)
	if offset == 0 {
		pdk.SetErrorString("hugeout: host could not allocate 64 MiB")
		return 1
	}
	for i := uint64(0); i < size; i += 8 {
		hostStoreU64(offset+i, 0x7878787878787878) // "xxxxxxxx"
	}
	hostOutputSet(offset, size)
	return 0
}

//go:wasmexport panic
func panicExport() int32 {
	panic("misbehave: deliberate panic")
}

func main() {}
