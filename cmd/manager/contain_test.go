package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	wb "github.com/wasm-operator/wasm-operator/internal/wasmbuild"
)

// hostileModules are hand-made modules, one per way a plugin could try to take what its limits do not
// give it, with what manager call must say about each.
func hostileModules() []struct {
	name, want string
	wasm       []byte
	args       []string
} {
	i32 := wb.FuncType{Results: []byte{wb.I32}}
	alloc := wb.FuncType{Params: []byte{wb.I64}, Results: []byte{wb.I64}}
	run := func(body []byte, mems, tables []wb.Limits) []byte {
		return (&wb.Module{Types: []wb.FuncType{i32}, Memories: mems, Tables: tables, Funcs: []wb.Func{{Body: body}},
			Exports: []wb.Export{{Name: "run", Kind: wb.ExportFunc}}}).Bytes()
	}
	start := &wb.Module{Types: []wb.FuncType{{}, i32}, Funcs: []wb.Func{{Body: wb.Loop()}, {Type: 1, Body: wb.Body(wb.I32Const(0))}},
		Exports: []wb.Export{{Name: "run", Kind: wb.ExportFunc, Index: 1}}, Start: wb.Index(0)}
	allocLoop := &wb.Module{Types: []wb.FuncType{i32, alloc}, Imports: []wb.Import{{Module: "extism:host/env", Name: "alloc", Type: 1}},
		Funcs: []wb.Func{{Body: wb.Body(wb.LoopStart, wb.I64Const(1), wb.Call(0), wb.I64Eqz, []byte{0x45}, wb.BrIf0, wb.End,
			wb.I32Const(7))}},
		Exports: []wb.Export{{Name: "run", Kind: wb.ExportFunc, Index: 1}}}
	grow := wb.Body(wb.LoopStart, wb.I32Const(1), wb.MemGrow, wb.I32Const(-1), []byte{0x47}, wb.BrIf0, wb.End, []byte{0x3f, 0x00})
	blocks := bytes.Repeat([]byte{0x02, 0x40, 0x41, 0, 0x0d, 0, 0x0b}, (4<<20)/7)
	return []struct {
		name, want string
		wasm       []byte
		args       []string
	}{
		{"start-loop", "the start function did not finish within 1s (limits.callTimeout)", start.Bytes(), nil},
		{"call-loop", "module closed with context deadline exceeded", (&wb.Module{Types: []wb.FuncType{{}}, Funcs: []wb.Func{{Body: wb.Loop()}},
			Exports: []wb.Export{{Name: "run", Kind: wb.ExportFunc}}}).Bytes(), nil},
		{"hidden-memory-1Gi", "the module starts with 1Gi of memory, more than limits.maxMemory 8Mi", run(wb.Body(wb.I32Const(0)), []wb.Limits{{Min: 16384}}, nil), nil},
		{"hidden-memory-4Gi", "the module starts with 4Gi of memory, more than limits.maxMemory 8Mi", run(wb.Body(wb.I32Const(0)), []wb.Limits{{Min: 65536}}, nil), nil},
		// Grows page by page until memory.grow fails, then returns the pages it has: 128 of 64Ki is 8Mi.
		{"hidden-memory-grow", "", run(grow, []wb.Limits{{Min: 1}}, nil), nil},
		// table.grow by 2^32-2 entries fails inside the guest (-1, exit code 255) instead of a fatal Go out-of-memory.
		{"table-grow-2^32", "", run(wb.Body(wb.RefNull, wb.I32Const(-2), wb.TableGrow), nil, []wb.Limits{{Min: 1}}), nil},
		{"table-max-2^26", "tables of up to 512Mi, more than limits.maxMemory 8Mi", run(wb.Body(wb.I32Const(0)), nil, []wb.Limits{{Min: 1, Max: wb.Index(1 << 26)}}), nil},
		// alloc(1) until the kernel refuses, then exit code 7.
		{"alloc-loop", "", allocLoop.Bytes(), nil},
		{"input-9Mi", "the 9437184-byte input does not fit in limits.maxMemory 8Mi", run(wb.Body(wb.I32Const(0)), nil, nil), []string{"--input-file", "9Mi"}},
		{"compile-bomb", "bytes of code, more than the 1Mi the host compiles in one function (--compile-max-function-size)",
			run(wb.Body(blocks, wb.I32Const(0)), nil, nil), nil},
		{"compile-bomb-unchecked", "takes more than the 128Mi the host allows a compile (--compile-memory)",
			run(wb.Body(blocks, wb.I32Const(0)), nil, nil), []string{"--compile-max-function-size", "8Mi", "--compile-memory", "128Mi"}},
		{"compile-bomb-slow", "after 300ms compiling (the compile process was killed); the limit is --compile-timeout",
			run(wb.Body(blocks, wb.I32Const(0)), nil, nil), []string{"--compile-max-function-size", "8Mi", "--compile-timeout", "300ms", "--compile-memory", "1Gi"}},
		// An endless recursion traps when wazero's call stack reaches its ceiling (not charged to the budget),
		// within about a second on an idle machine: a longer timeout than the others', so that a busy
		// one reaches the ceiling before the deadline (1s was passed in CI).
		{"recursion", "stack overflow", (&wb.Module{Types: []wb.FuncType{i32}, Funcs: []wb.Func{{Body: wb.Body(wb.Call(0))}},
			Exports: []wb.Export{{Name: "run", Kind: wb.ExportFunc}}}).Bytes(), []string{"--timeout", "6s"}},
	}
}

// TestCallContainsHostile: under --timeout 1s --memory-max 8Mi each hostile module ends within a few
// seconds with a non-zero exit code and a clear message (or a result bounded by the limits), never a Go
// fatal error, and the process tree stays within a few hundred MB.
func TestCallContainsHostile(t *testing.T) {
	dir := t.TempDir()
	for _, c := range hostileModules() {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, c.name+".wasm")
			if err := os.WriteFile(path, c.wasm, 0o644); err != nil {
				t.Fatal(err)
			}
			args := []string{"call", "--timeout", "1s", "--memory-max", "8Mi"}
			for i := 0; i < len(c.args); i++ {
				if c.args[i] == "--input-file" { // a size: write an input file of that size
					in := filepath.Join(dir, "input")
					if err := os.WriteFile(in, make([]byte, 9<<20), 0o644); err != nil {
						t.Fatal(err)
					}
					args = append(args, "--input-file", in)
					i++
					continue
				}
				args = append(args, c.args[i])
			}
			args = append(args, path, "run")
			cmd := exec.Command(managerBin, args...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			start := time.Now()
			_ = cmd.Run()
			took := time.Since(start)
			code := cmd.ProcessState.ExitCode()
			rss := cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss >> 10 // MiB
			t.Logf("exit %d after %v, peak RSS %d MiB: %s", code, took.Round(10*time.Millisecond), rss, strings.TrimSpace(stderr.String()))
			if code == 0 {
				t.Errorf("exit code 0")
			}
			if strings.Contains(stderr.String(), "fatal error") || strings.Contains(stderr.String(), "goroutine ") {
				t.Errorf("Go crash: %s", stderr.String())
			}
			if !strings.Contains(stderr.String(), c.want) {
				t.Errorf("stderr %q, want %q", stderr.String(), c.want)
			}
			if took > 8*time.Second {
				t.Errorf("took %v", took)
			}
			if rss > 400 {
				t.Errorf("peak RSS %d MiB", rss)
			}
		})
	}
}
