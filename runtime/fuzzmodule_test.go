package runtime

import (
	"context"
	"testing"
	"time"

	wb "github.com/wasm-operator/wasm-operator/internal/wasmbuild"
)

// fuzzSnippets are stack-neutral pieces of a function body that try to take memory, tables, kernel
// memory or time; local 0 is an i32 and function 0 is the kernel's alloc.
var fuzzSnippets = []func(arg byte) []byte{
	func(a byte) []byte { return join(wb.I32Const(int32(a)<<8), wb.MemGrow, wb.Drop) },
	func(a byte) []byte { return join(wb.RefNull, wb.I32Const(int32(a)<<24), wb.TableGrow, wb.Drop) },
	func(a byte) []byte { return join(wb.I64Const(int64(a)<<16), wb.Call(0), wb.Drop) },
	func(a byte) []byte { // loop while --local0 != 0: up to 2^32 times
		return join(wb.LoopStart, []byte{0x20, 0}, wb.I32Const(1), []byte{0x6b, 0x22, 0}, wb.BrIf0, wb.End)
	},
	func(a byte) []byte { return join(wb.I32Const(int32(a)<<16), wb.I32Const(1), []byte{0x36, 2, 0}) }, // i32.store
	func(a byte) []byte { return []byte{0x00} },                                                        // unreachable
	func(a byte) []byte {
		return join(wb.LoopStart, wb.I64Const(1), wb.Call(0), wb.I64Eqz, []byte{0x45}, wb.BrIf0, wb.End)
	},
	func(a byte) []byte { return join([]byte{0x03, 0x40, 0x0c, 0x00, 0x0b}) }, // loop br 0 end
}

func join(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// fuzzModule builds a small module from data: its memory, table, whether a start function runs the
// body, and the body itself as snippets.
func fuzzModule(data []byte) []byte {
	at := func(i int) byte {
		if i < len(data) {
			return data[i]
		}
		return 0
	}
	m := wb.Module{Types: []wb.FuncType{i32T, i64i64, voidT},
		Imports: []wb.Import{{Module: KernelModule, Name: "alloc", Type: 1}}}
	if f := at(0); f&1 != 0 {
		l := wb.Limits{Min: uint32(at(1))}
		if f&2 != 0 {
			l.Max = wb.Index(l.Min + uint32(at(2))<<8)
		}
		m.Memories = []wb.Limits{l}
	}
	if f := at(0); f&4 != 0 {
		l := wb.Limits{Min: uint32(at(3)) << 8}
		if f&8 != 0 {
			l.Max = wb.Index(l.Min + uint32(at(4))<<16)
		}
		m.Tables = []wb.Limits{l}
	}
	var body []byte
	for i := 5; i+1 < len(data) && i < 5+2*16; i += 2 {
		body = append(body, fuzzSnippets[int(data[i])%len(fuzzSnippets)](data[i+1])...)
	}
	locals := []wb.Local{{Count: 1, Type: wb.I32}}
	m.Funcs = []wb.Func{{Type: 0, Locals: locals, Body: wb.Body(body, wb.I32Const(0))}}
	m.Exports = []wb.Export{{Name: "run", Kind: wb.ExportFunc, Index: 1}}
	if at(0)&16 != 0 {
		m.Funcs = append(m.Funcs, wb.Func{Type: 2, Locals: locals, Body: wb.Body(body)})
		m.Start = wb.Index(2)
	}
	if at(0)&32 != 0 {
		m.Data = []byte("data")
	}
	return m.Bytes()
}

// FuzzLoadModule loads random small modules (memories, tables, start functions, bodies that grow,
// allocate and loop; and raw bytes after a wasm header) under tight limits, makes an instance and calls
// it. Refusals and failed calls are fine; a crash, a hang or memory over the budget is not.
func FuzzLoadModule(f *testing.F) {
	f.Add([]byte{0x01, 1, 0, 0, 0, 0, 200})                    // memory, grow by 200<<8 pages
	f.Add([]byte{0x05, 1, 0, 1, 0, 1, 255})                    // table without a maximum, grow by 2^31
	f.Add([]byte{0x0d, 1, 0, 1, 255, 1, 4})                    // table with a large maximum
	f.Add([]byte{0x11, 1, 0, 0, 0, 3, 0})                      // start function looping 2^32 times
	f.Add([]byte{0x11, 1, 0, 0, 0, 7, 0})                      // start function looping forever
	f.Add([]byte{0x01, 17, 0, 0, 0, 6, 0, 2, 1})               // alloc until refused
	f.Add([]byte{0x21, 0, 0, 0, 0, 4, 3})                      // data segment, store out of bounds
	f.Add([]byte{0x80, 0x00, 0x61, 0x73, 0x6d, 0x01, 0x05, 4}) // raw bytes
	e := newTestEngine(f)
	limits := Limits{MaxMemoryBytes: 1 << 20, CallTimeout: 50 * time.Millisecond, InitTimeout: 50 * time.Millisecond}
	f.Fuzz(func(t *testing.T, data []byte) {
		ctx := context.Background()
		wasm := fuzzModule(data)
		if len(data) > 0 && data[0]&0x80 != 0 {
			wasm = append([]byte("\x00asm\x01\x00\x00\x00"), data[1:]...)
		}
		p, err := e.Load(ctx, wasm, PluginConfig{Name: "fuzz", Limits: limits})
		if err != nil {
			return
		}
		defer p.Close(ctx)
		start := time.Now()
		i, err := p.NewInstance(ctx)
		if err != nil {
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("NewInstance took %v", d)
			}
			return
		}
		defer i.Close(ctx)
		_, _, _ = i.Call(ctx, "run", []byte("input"))
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("instance and call took %v", d)
		}
		if used := i.budget.guest + i.budget.arena + i.budget.other; used > uint64(limits.MaxMemoryBytes) {
			t.Fatalf("instance holds %d bytes, over its 1Mi budget", used)
		}
	})
}
