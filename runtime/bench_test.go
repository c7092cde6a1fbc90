package runtime

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	extism "github.com/extism/go-sdk"
	"github.com/tetratelabs/wazero"

	"github.com/wasm-operator/wasm-operator/internal/testplugins"
)

// The benchmarks of BENCHMARKS.md, "## runtime". Run them in one go:
//
//	go test ./runtime -run '^$' -bench . -benchtime 2s

var benchInput = []byte("Hello, World! This is a small input.")

func benchWasm(b *testing.B, name string) []byte {
	wasm, err := os.ReadFile(sdkWasm(b, name))
	if err != nil {
		b.Fatal(err)
	}
	return wasm
}

// BenchmarkCountVowels calls the SDK's count_vowels plugin: on our runtime with a reused
// (pooled) instance, on the SDK with a reused instance, and on the SDK with a fresh instance per
// call, as a host without pooling would.
func BenchmarkCountVowels(b *testing.B) {
	ctx := context.Background()
	wasm := benchWasm(b, "count_vowels.wasm")

	for _, c := range []struct {
		name string
		cfg  EngineConfig
	}{{"ours/reused", EngineConfig{}}, {"ours/reused/without-close-on-context-done", EngineConfig{withoutTermination: true}}} {
		b.Run(c.name, func(b *testing.B) {
			e, err := NewEngine(ctx, c.cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer e.Close(ctx)
			benchOurs(b, e, wasm)
		})
	}

	manifest := extism.Manifest{Wasm: []extism.Wasm{extism.WasmData{Data: wasm}}}
	sdkPlugin := func(b *testing.B) *extism.CompiledPlugin {
		cp, err := extism.NewCompiledPlugin(ctx, manifest, extism.PluginConfig{EnableWasi: true}, nil)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { cp.Close(ctx) })
		return cp
	}
	b.Run("sdk/reused", func(b *testing.B) {
		cp := sdkPlugin(b)
		inst, err := cp.Instance(ctx, extism.PluginInstanceConfig{})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			if rc, _, err := inst.Call("count_vowels", benchInput); err != nil || rc != 0 {
				b.Fatal(rc, err)
			}
		}
	})
	b.Run("sdk/fresh", func(b *testing.B) {
		cp := sdkPlugin(b)
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			inst, err := cp.Instance(ctx, extism.PluginInstanceConfig{})
			if err != nil {
				b.Fatal(err)
			}
			if rc, _, err := inst.Call("count_vowels", benchInput); err != nil || rc != 0 {
				b.Fatal(rc, err)
			}
			inst.Close(ctx)
		}
	})
}

// benchOurs calls count_vowels on one reused instance, as a pooled host does.
func benchOurs(b *testing.B, e *Engine, wasm []byte) {
	ctx := context.Background()
	p, err := e.Load(ctx, wasm, PluginConfig{Permissions: Permissions{Vars: &Vars{}}, Limits: Limits{CallTimeout: 10e9}})
	if err != nil {
		b.Fatal(err)
	}
	inst, err := p.NewInstance(ctx)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, rc, err := inst.Call(ctx, "count_vowels", benchInput); err != nil || rc != 0 {
			b.Fatal(rc, err)
		}
	}
}

// BenchmarkInstantiate makes an instance from a compiled module and closes it: ours (kernel in
// Go) and the SDK's (which also instantiates its kernel module).
func BenchmarkInstantiate(b *testing.B) {
	ctx := context.Background()
	wasm := benchWasm(b, "count_vowels.wasm")
	b.Run("ours", func(b *testing.B) {
		e := newTestEngine(b)
		p, err := e.Load(ctx, wasm, PluginConfig{Permissions: Permissions{Vars: &Vars{}}})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			inst, err := p.NewInstance(ctx)
			if err != nil {
				b.Fatal(err)
			}
			inst.Close(ctx)
		}
	})
	b.Run("sdk", func(b *testing.B) {
		cp, err := extism.NewCompiledPlugin(ctx, extism.Manifest{Wasm: []extism.Wasm{extism.WasmData{Data: wasm}}},
			extism.PluginConfig{EnableWasi: true}, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer cp.Close(ctx)
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			inst, err := cp.Instance(ctx, extism.PluginInstanceConfig{})
			if err != nil {
				b.Fatal(err)
			}
			inst.Close(ctx)
		}
	})
}

// BenchmarkCompile compiles count_vowels (1.8 MB) in a new engine, as a host does when it starts:
// with an empty cache folder (cold) and with one another process filled (warm).
func BenchmarkCompile(b *testing.B) {
	for _, c := range []struct{ name, path string }{
		{"count_vowels", sdkWasm(b, "count_vowels.wasm")},
		{"greet", testplugins.Build(b, "greet")},
	} {
		wasm, err := os.ReadFile(c.path)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(c.name, func(b *testing.B) { benchCompile(b, wasm) })
	}
}

func benchCompile(b *testing.B, wasm []byte) {
	ctx := context.Background()
	var command []string // set by cold-bounded
	compile := func(b *testing.B, dir string) {
		e, err := NewEngine(ctx, EngineConfig{CacheDir: dir, CompileCommand: command})
		if err != nil {
			b.Fatal(err)
		}
		m, err := e.Compile(ctx, wasm)
		if err != nil {
			b.Fatal(err)
		}
		m.Close(ctx)
		e.Close(ctx)
	}
	cold := func(b *testing.B) {
		root := b.TempDir()
		b.ReportAllocs()
		n := 0
		for b.Loop() {
			n++
			compile(b, filepath.Join(root, itoa(n)))
		}
	}
	b.Run("cold", cold)
	// As the manager compiles: first in a confined child process, which proves it fits the bounds, then
	// again in process, which alone writes the cache.
	b.Run("cold-bounded", func(b *testing.B) {
		command = []string{os.Args[0]}
		defer func() { command = nil }()
		cold(b)
	})
	b.Run("warm", func(b *testing.B) {
		dir := b.TempDir()
		compile(b, dir)
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			compile(b, dir)
		}
	})
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var s []byte
	for ; n > 0; n /= 10 {
		s = append([]byte{byte('0' + n%10)}, s...)
	}
	return string(s)
}

// loopWasm exports loop(n i32) i32, which counts to n: a tight loop with nothing but a branch.
var loopWasm = []byte{
	0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
	0x01, 0x06, 0x01, 0x60, 0x01, 0x7f, 0x01, 0x7f, // type: (i32) -> i32
	0x03, 0x02, 0x01, 0x00, // function 0 has type 0
	0x07, 0x08, 0x01, 0x04, 'l', 'o', 'o', 'p', 0x00, 0x00, // export "loop"
	0x0a, 0x17, 0x01, 0x15, // code: one body of 21 bytes
	0x01, 0x01, 0x7f, // one i32 local
	0x03, 0x40, // loop
	0x20, 0x01, 0x41, 0x01, 0x6a, 0x22, 0x01, // i = i + 1
	0x20, 0x00, 0x49, 0x0d, 0x00, // br_if (i < n)
	0x0b,       // end loop
	0x20, 0x01, // return i
	0x0b,
}

// BenchmarkCloseOnContextDone measures what wazero's close-on-context-done costs: on each
// iteration of a tight loop (the periodic check it compiles in) and on each call (a goroutine that
// watches the context). RATIONALE.md, "Why is close-on-context-done always on?", uses it.
func BenchmarkCloseOnContextDone(b *testing.B) {
	ctx := context.Background()
	for _, on := range []bool{false, true} {
		name := "off"
		if on {
			name = "on"
		}
		rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().WithCloseOnContextDone(on))
		defer rt.Close(ctx)
		mod, err := rt.Instantiate(ctx, loopWasm)
		if err != nil {
			b.Fatal(err)
		}
		f := mod.ExportedFunction("loop")
		for _, n := range []uint64{1, 10_000_000} {
			b.Run(name+"/iterations="+itoa(int(n)), func(b *testing.B) {
				stack := []uint64{n}
				b.ReportAllocs()
				for b.Loop() {
					stack[0] = n
					if err := f.CallWithStack(ctx, stack); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/iteration")
			})
		}
	}
}

// BenchmarkGuardedCompute measures what stopping calls costs code that computes: the SDK's
// count_vowels on a 64 KiB input and an empty loop of 10 million iterations (computeWasm's count),
// each on one reused instance with a call timeout ("guarded") and on an engine that cannot stop
// calls ("unguarded"), beside the Extism Go SDK with a timeout. RATIONALE.md, "Why is wazero patched
// for call timeouts?", uses it.
func BenchmarkGuardedCompute(b *testing.B) {
	ctx := context.Background()
	input := bytes.Repeat([]byte("Hello, World! This is a longer input. "), 64<<10/38+1)[:64<<10]
	for _, c := range []struct {
		name, fn   string
		wasm       []byte
		input      []byte
		iterations int
	}{
		{"count_vowels-64KiB", "count_vowels", benchWasm(b, "count_vowels.wasm"), input, 0},
		{"loop", "count", computeWasm, nil, computeLoopIterations},
	} {
		report := func(b *testing.B) {
			if c.input != nil {
				b.SetBytes(int64(len(c.input)))
			}
			if c.iterations > 0 {
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(c.iterations), "ns/iteration")
			}
		}
		modes := []struct {
			name string
			cfg  EngineConfig
			wasm []byte // instead of c.wasm
		}{{"guarded", EngineConfig{}, nil}, {"unguarded", EngineConfig{withoutTermination: true}, nil}}
		if c.name == "loop" {
			// The other way to stop calls: a module rewritten at load checks a global of its own, on an
			// engine without close-on-context-done.
			modes = append(modes, modes[1])
			modes[2].name, modes[2].wasm = "rewritten-unguarded", rewrittenLoopWasm
		}
		for _, mode := range modes {
			b.Run(c.name+"/"+mode.name, func(b *testing.B) {
				e, err := NewEngine(ctx, mode.cfg)
				if err != nil {
					b.Fatal(err)
				}
				defer e.Close(ctx)
				wasm := c.wasm
				if mode.wasm != nil {
					wasm = mode.wasm
				}
				benchCall(b, e, wasm, c.fn, c.input)
				report(b)
			})
		}
		b.Run(c.name+"/sdk-timeout", func(b *testing.B) {
			manifest := extism.Manifest{Wasm: []extism.Wasm{extism.WasmData{Data: c.wasm}}, Timeout: uint64(time.Minute.Milliseconds())}
			cp, err := extism.NewCompiledPlugin(ctx, manifest, extism.PluginConfig{EnableWasi: true}, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer cp.Close(ctx)
			inst, err := cp.Instance(ctx, extism.PluginInstanceConfig{})
			if err != nil {
				b.Fatal(err)
			}
			defer inst.Close(ctx)
			b.ReportAllocs()
			for b.Loop() {
				if rc, _, err := inst.Call(c.fn, c.input); err != nil || rc != 0 {
					b.Fatal(rc, err)
				}
			}
			report(b)
		})
	}
}

// benchCall calls fn with input on one reused instance of wasm, with a call timeout.
func benchCall(b *testing.B, e *Engine, wasm []byte, fn string, input []byte) {
	ctx := context.Background()
	p, err := e.Load(ctx, wasm, PluginConfig{Permissions: Permissions{Vars: &Vars{}}, Limits: Limits{CallTimeout: time.Minute}})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close(ctx)
	inst, err := p.NewInstance(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer inst.Close(ctx)
	b.ReportAllocs()
	for b.Loop() {
		if _, rc, err := inst.Call(ctx, fn, input); err != nil || rc != 0 {
			b.Fatal(rc, err)
		}
	}
}
