// Command shout writes shout.wasm, an Extism plugin of about 300 bytes, assembled by hand: small enough
// for a ConfigMap (1 MiB), which no plugin built with the Go toolchain is (a Go wasip1 module is about
// 2 MB, -ldflags='-s -w' or not). Its function `shout` returns its input with a-z upper-cased. It uses only
// the Extism kernel (input_length, input_load_u8, alloc, store_u8, output_set), no WASI and no memory of
// its own, so any Extism host runs it. The module is committed beside this file (a test keeps it equal to
// what this command writes); config/samples/configmap.yaml loads it from a ConfigMap:
//
//	go run ./examples/shout -o examples/shout/shout.wasm   # after a change here
//	kubectl create configmap shout --from-file=plugin.wasm=examples/shout/shout.wasm
//	kubectl apply -f config/samples/configmap.yaml
//
// Its source, in the WebAssembly text format:
//
//	(module
//	  (import "extism:host/env" "input_length" (func $input_length (result i64)))
//	  (import "extism:host/env" "input_load_u8" (func $input_load_u8 (param i64) (result i32)))
//	  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
//	  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
//	  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
//	  (func (export "shout") (result i32) (local $n i64) (local $i i64) (local $out i64) (local $c i32)
//	    (local.set $n (call $input_length))
//	    (local.set $out (call $alloc (local.get $n)))
//	    (block $done
//	      (loop $next
//	        (br_if $done (i64.ge_u (local.get $i) (local.get $n)))
//	        (local.set $c (call $input_load_u8 (local.get $i)))
//	        (if (i32.lt_u (i32.sub (local.get $c) (i32.const 97)) (i32.const 26))
//	          (then (local.set $c (i32.sub (local.get $c) (i32.const 32)))))
//	        (call $store_u8 (i64.add (local.get $out) (local.get $i)) (local.get $c))
//	        (local.set $i (i64.add (local.get $i) (i64.const 1)))
//	        (br $next)))
//	    (call $output_set (local.get $out) (local.get $n))
//	    (i32.const 0)))
package main

import (
	"flag"
	"fmt"
	"os"
)

func main() {
	out := flag.String("o", "shout.wasm", "output file")
	flag.Parse()
	if err := os.WriteFile(*out, Module(), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "shout:", err)
		os.Exit(1)
	}
}

// Value types and opcodes of the WebAssembly binary format used below.
const (
	i32, i64 = 0x7f, 0x7e
	funcType = 0x60
	void     = 0x40

	opBlock, opLoop, opIf, opEnd, opBr, opBrIf, opCall = 0x02, 0x03, 0x04, 0x0b, 0x0c, 0x0d, 0x10
	opLocalGet, opLocalSet, opI32Const, opI64Const     = 0x20, 0x21, 0x41, 0x42
	opI32LtU, opI64GeU, opI32Sub, opI64Add             = 0x49, 0x5a, 0x6b, 0x7c
)

// Module returns the module's bytes.
func Module() []byte {
	types := [][]byte{
		{funcType, 0, 1, i64},      // 0: () -> i64
		{funcType, 1, i64, 1, i32}, // 1: (i64) -> i32
		{funcType, 1, i64, 1, i64}, // 2: (i64) -> i64
		{funcType, 2, i64, i32, 0}, // 3: (i64, i32) -> ()
		{funcType, 2, i64, i64, 0}, // 4: (i64, i64) -> ()
		{funcType, 0, 1, i32},      // 5: () -> i32
	}
	imports := []struct {
		name string
		typ  byte
	}{{"input_length", 0}, {"input_load_u8", 1}, {"alloc", 2}, {"store_u8", 3}, {"output_set", 4}}
	const inputLength, inputLoadU8, alloc, storeU8, outputSet = 0, 1, 2, 3, 4
	const n, i, out, c = 0, 1, 2, 3 // locals

	var importSec [][]byte
	for _, im := range imports {
		importSec = append(importSec, cat(str("extism:host/env"), str(im.name), []byte{0x00, im.typ}))
	}
	body := cat(
		[]byte{2, 3, i64, 1, i32}, // locals: n, i, out (i64), c (i32)
		[]byte{opCall, inputLength, opLocalSet, n},
		[]byte{opLocalGet, n, opCall, alloc, opLocalSet, out},
		[]byte{opBlock, void, opLoop, void},
		[]byte{opLocalGet, i, opLocalGet, n, opI64GeU, opBrIf, 1},
		[]byte{opLocalGet, i, opCall, inputLoadU8, opLocalSet, c},
		[]byte{opLocalGet, c, opI32Const, 0xe1, 0x00 /* 97, 'a' */, opI32Sub, opI32Const, 26, opI32LtU, opIf, void},
		[]byte{opLocalGet, c, opI32Const, 32, opI32Sub, opLocalSet, c, opEnd},
		[]byte{opLocalGet, out, opLocalGet, i, opI64Add, opLocalGet, c, opCall, storeU8},
		[]byte{opLocalGet, i, opI64Const, 1, opI64Add, opLocalSet, i},
		[]byte{opBr, 0, opEnd, opEnd},
		[]byte{opLocalGet, out, opLocalGet, n, opCall, outputSet},
		[]byte{opI32Const, 0, opEnd},
	)
	return cat(
		[]byte{0x00, 'a', 's', 'm', 1, 0, 0, 0},
		section(1, vec(types)),
		section(2, vec(importSec)),
		section(3, vec([][]byte{{5}})), // one function of type 5
		section(7, vec([][]byte{cat(str("shout"), []byte{0x00, byte(len(imports))})})), // exported as function 5
		section(10, vec([][]byte{cat(uleb(len(body)), body)})),
	)
}

func section(id byte, content []byte) []byte { return cat([]byte{id}, uleb(len(content)), content) }

func vec(items [][]byte) []byte { return cat(append([][]byte{uleb(len(items))}, items...)...) }

func str(s string) []byte { return cat(uleb(len(s)), []byte(s)) }

func uleb(v int) []byte {
	var out []byte
	for {
		b := byte(v & 0x7f)
		v >>= 7
		if v == 0 {
			return append(out, b)
		}
		out = append(out, b|0x80)
	}
}

func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}
