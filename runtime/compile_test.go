package runtime

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	wb "github.com/wasm-operator/wasm-operator/internal/wasmbuild"
)

// TestMain lets the test binary stand for `manager compile` when an engine starts it as its
// compiling child.
func TestMain(m *testing.M) {
	if dir := os.Getenv(sandboxProbeEnv); dir != "" {
		os.Exit(sandboxProbe(dir))
	}
	if IsCompileChild() {
		os.Exit(CompileMain(os.Args[1:], os.Stdin, os.Stderr))
	}
	os.Exit(m.Run())
}

// bigFunction is a module whose one function has about n bytes of code, which the compiler needs
// memory in proportion to.
func bigFunction(n int) []byte {
	body := bytes.Repeat([]byte{0x41, 0x00, 0x1a}, n/3) // i32.const 0; drop
	return runModule(wb.Body(body, wb.I32Const(0)), nil, nil)
}

func childEngine(t *testing.T, cfg EngineConfig) *Engine {
	t.Helper()
	cfg.CompileCommand = []string{os.Args[0]}
	return newEngineWith(t, cfg)
}

// A compile that would take more memory than allowed is stopped in its child process and the module
// refused with ErrModuleTooComplex naming the limit; the shape checks refuse what is obviously too
// big before anything compiles; a good module compiles in the child and runs.
func TestCompileBounded(t *testing.T) {
	ctx := context.Background()
	e := childEngine(t, EngineConfig{Compile: CompileLimits{MaxFunctionBytes: -1, CompileMemory: 64 << 20}})
	_, err := e.Compile(ctx, bigFunction(4<<20))
	if !errors.Is(err, ErrModuleTooComplex) || !strings.Contains(err.Error(), "takes more than the 64Mi the host allows a compile (--compile-memory)") {
		t.Errorf("4 MiB function under 64Mi: %v", err)
	}

	e = childEngine(t, EngineConfig{})
	_, err = e.Compile(ctx, bigFunction(4<<20))
	if !errors.Is(err, ErrModuleTooComplex) || !strings.Contains(err.Error(), "function 0 has 4194307 bytes of code, more than the 1Mi the host compiles in one function (--compile-max-function-size)") {
		t.Errorf("4 MiB function: %v", err)
	}
	many := wb.Module{Types: []wb.FuncType{i32T}}
	for range 1000 {
		many.Funcs = append(many.Funcs, wb.Func{Body: wb.Body(wb.I32Const(0))})
	}
	e2 := childEngine(t, EngineConfig{Compile: CompileLimits{MaxFunctions: 999}})
	if _, err := e2.Compile(ctx, many.Bytes()); !errors.Is(err, ErrModuleTooComplex) || !strings.Contains(err.Error(), "defines 1000 functions, more than the 999") {
		t.Errorf("1000 functions: %v", err)
	}
	locals := (&wb.Module{Types: []wb.FuncType{i32T}, Funcs: []wb.Func{{Locals: []wb.Local{{Count: 100_000, Type: wb.I64}}, Body: wb.Body(wb.I32Const(0))}}}).Bytes()
	if _, err := e.Compile(ctx, locals); !errors.Is(err, ErrModuleTooComplex) || !strings.Contains(err.Error(), "declares 100000 locals, more than the 50000") {
		t.Errorf("100000 locals: %v", err)
	}
	if _, err := e.Compile(ctx, []byte("\x00asm\x01\x00\x00\x00\x01\x05")); !errors.Is(err, ErrInvalidModule) {
		t.Errorf("truncated module: %v", err)
	}

	p := mustLoadWasm(t, e, runModule(wb.Body(wb.I32Const(7)), nil, nil), Limits{})
	if _, rc, err := newInstance(t, p).Call(ctx, "run", nil); rc != 7 || err != nil {
		t.Errorf("module compiled in the child: rc %d, %v", rc, err)
	}
}

// What the child compiles is what the parent loads: one compiled entry, in the engine's compiled folder,
// so the parent never compiles the module again in process, where neither bound holds.
func TestChildFillsTheParentsCache(t *testing.T) {
	dir := t.TempDir()
	e := childEngine(t, EngineConfig{CacheDir: dir})
	p := mustLoadWasm(t, e, runModule(wb.Body(wb.I32Const(7)), nil, nil), Limits{})
	if _, rc, err := newInstance(t, p).Call(context.Background(), "run", nil); rc != 7 || err != nil {
		t.Fatalf("rc %d, %v", rc, err)
	}
	var entries []string
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			entries = append(entries, path)
		}
		return err
	})
	if len(entries) != 1 || !strings.HasPrefix(entries[0], CompiledDir(dir)+string(filepath.Separator)+"wazero-") {
		t.Errorf("compiled entries = %v, want one in %s", entries, CompiledDir(dir))
	}
}

// A compile past its timeout is killed, not left running.
func TestCompileTimeoutKills(t *testing.T) {
	e := childEngine(t, EngineConfig{CompileTimeout: 300 * time.Millisecond, Compile: CompileLimits{MaxFunctionBytes: -1, CompileMemory: 2 << 30}})
	start := time.Now()
	_, err := e.Compile(context.Background(), bigFunction(8<<20))
	if !errors.Is(err, ErrCompileTimeout) || !strings.Contains(err.Error(), "(the compile process was killed)") {
		t.Errorf("8 MiB function in 300ms: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("returned after %v", d)
	}
}
