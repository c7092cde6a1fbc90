// Package wasmbuild writes small WebAssembly modules byte by byte, for tests that need a module no
// compiler would produce: a start section that never returns, a memory that is not exported, a table
// that grows without bound, a function too large to compile.
//
//	m := wasmbuild.Module{
//		Types:  []wasmbuild.FuncType{{}},
//		Funcs:  []wasmbuild.Func{{Body: wasmbuild.Loop()}},
//		Start:  wasmbuild.Index(0),
//	}
//	wasm := m.Bytes()
package wasmbuild

import "encoding/binary"

// Value types.
const (
	I32 byte = 0x7f
	I64 byte = 0x7e
)

// Export kinds.
const (
	ExportFunc   byte = 0
	ExportTable  byte = 1
	ExportMemory byte = 2
)

// FuncType is a function signature.
type FuncType struct{ Params, Results []byte }

// Import is an imported function.
type Import struct {
	Module, Name string
	Type         uint32
}

// Local is a run of locals of one type.
type Local struct {
	Count uint32
	Type  byte
}

// Func is a defined function. Body is its instructions, the final end included.
type Func struct {
	Type   uint32
	Locals []Local
	Body   []byte
}

// Limits are a table's or a memory's minimum and optional maximum.
type Limits struct {
	Min uint32
	Max *uint32
}

// Export names a function, table or memory.
type Export struct {
	Name  string
	Kind  byte
	Index uint32
}

// Module is a module's sections; empty ones are left out.
type Module struct {
	Types    []FuncType
	Imports  []Import
	Funcs    []Func
	Tables   []Limits // funcref tables
	Memories []Limits
	Exports  []Export
	Start    *uint32
	// Data, when set, is one active data segment at offset 0 of memory 0.
	Data []byte
}

// Index returns a pointer to n, for Start and Limits.Max.
func Index(n uint32) *uint32 { return &n }

// Bytes encodes the module.
func (m *Module) Bytes() []byte {
	out := []byte{0, 'a', 's', 'm', 1, 0, 0, 0}
	section := func(id byte, count int, items func(b []byte) []byte) {
		if count == 0 {
			return
		}
		body := items(U32(nil, uint32(count)))
		out = append(out, id)
		out = U32(out, uint32(len(body)))
		out = append(out, body...)
	}
	section(1, len(m.Types), func(b []byte) []byte {
		for _, t := range m.Types {
			b = append(b, 0x60)
			b = vec(b, t.Params)
			b = vec(b, t.Results)
		}
		return b
	})
	section(2, len(m.Imports), func(b []byte) []byte {
		for _, im := range m.Imports {
			b = name(b, im.Module)
			b = name(b, im.Name)
			b = append(b, 0)
			b = U32(b, im.Type)
		}
		return b
	})
	section(3, len(m.Funcs), func(b []byte) []byte {
		for _, f := range m.Funcs {
			b = U32(b, f.Type)
		}
		return b
	})
	section(4, len(m.Tables), func(b []byte) []byte {
		for _, t := range m.Tables {
			b = append(b, 0x70)
			b = limits(b, t)
		}
		return b
	})
	section(5, len(m.Memories), func(b []byte) []byte {
		for _, l := range m.Memories {
			b = limits(b, l)
		}
		return b
	})
	section(7, len(m.Exports), func(b []byte) []byte {
		for _, e := range m.Exports {
			b = name(b, e.Name)
			b = append(b, e.Kind)
			b = U32(b, e.Index)
		}
		return b
	})
	if m.Start != nil {
		body := U32(nil, *m.Start)
		out = append(out, 8)
		out = U32(out, uint32(len(body)))
		out = append(out, body...)
	}
	section(10, len(m.Funcs), func(b []byte) []byte {
		for _, f := range m.Funcs {
			fb := U32(nil, uint32(len(f.Locals)))
			for _, l := range f.Locals {
				fb = U32(fb, l.Count)
				fb = append(fb, l.Type)
			}
			fb = append(fb, f.Body...)
			b = U32(b, uint32(len(fb)))
			b = append(b, fb...)
		}
		return b
	})
	if m.Data != nil {
		section(11, 1, func(b []byte) []byte {
			b = append(b, 0, 0x41, 0, 0x0b) // memory 0, offset i32.const 0
			return vec(b, m.Data)
		})
	}
	return out
}

func limits(b []byte, l Limits) []byte {
	if l.Max == nil {
		return U32(append(b, 0), l.Min)
	}
	return U32(U32(append(b, 1), l.Min), *l.Max)
}

func vec(b, items []byte) []byte { return append(U32(b, uint32(len(items))), items...) }

func name(b []byte, s string) []byte { return append(U32(b, uint32(len(s))), s...) }

// U32 appends n as unsigned LEB128.
func U32(b []byte, n uint32) []byte { return binary.AppendUvarint(b, uint64(n)) }

// S64 appends n as signed LEB128, as i32.const and i64.const take it.
func S64(b []byte, n int64) []byte {
	for {
		c := byte(n & 0x7f)
		n >>= 7
		if (n == 0 && c&0x40 == 0) || (n == -1 && c&0x40 != 0) {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

// I32Const is the instruction i32.const n.
func I32Const(n int32) []byte { return S64([]byte{0x41}, int64(n)) }

// I64Const is the instruction i64.const n.
func I64Const(n int64) []byte { return S64([]byte{0x42}, n) }

// Call is the instruction call f.
func Call(f uint32) []byte { return U32([]byte{0x10}, f) }

// Loop is a function body that never returns: loop br 0 end end.
func Loop() []byte { return []byte{0x03, 0x40, 0x0c, 0x00, 0x0b, 0x0b} }

// Body joins instructions and appends the function's end.
func Body(instrs ...[]byte) []byte {
	var b []byte
	for _, in := range instrs {
		b = append(b, in...)
	}
	return append(b, 0x0b)
}

// Other instructions the tests use.
var (
	Drop      = []byte{0x1a}
	MemGrow   = []byte{0x40, 0x00}
	TableGrow = []byte{0xfc, 0x0f, 0x00}
	RefNull   = []byte{0xd0, 0x70}
	I64Eqz    = []byte{0x50}
	// LoopStart and LoopEnd wrap a body that repeats while BrIf's condition holds: LoopStart, body
	// pushing an i32, BrIf0, End.
	LoopStart = []byte{0x03, 0x40}
	BrIf0     = []byte{0x0d, 0x00}
	End       = []byte{0x0b}
)
