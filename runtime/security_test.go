package runtime

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tetratelabs/wazero/sys"

	"github.com/wasm-operator/wasm-operator/internal/testplugins"
)

func loadFile(t *testing.T, e *Engine, path string, cfg PluginConfig) *Plugin {
	t.Helper()
	wasm, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	p, err := e.Load(context.Background(), wasm, cfg)
	if err != nil {
		t.Fatalf("load %s: %v", path, err)
	}
	t.Cleanup(func() { p.Close(context.Background()) })
	return p
}

func newInstance(t *testing.T, p *Plugin) *Instance {
	t.Helper()
	i, err := p.NewInstance(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { i.Close(context.Background()) })
	return i
}

// TestMisbehave runs each misbehaving export and checks that it is stopped with a clear error,
// that its instance is marked for discarding, and that other instances, of the same plugin and of
// another, keep working.
func TestMisbehave(t *testing.T) {
	ctx := context.Background()
	e := newTestEngine(t)
	// The timeout stops the endless loop; it leaves the memory bomb time to fail on its own, which under
	// the race detector on a loaded machine takes over a second.
	limits := Limits{MaxMemoryBytes: 64 << 20, CallTimeout: 3 * time.Second, MaxOutputBytes: 4 << 20}
	bad := loadFile(t, e, testplugins.Build(t, "misbehave"), PluginConfig{Name: "misbehave", Limits: limits})
	good := loadFile(t, e, testplugins.Build(t, "count-vowels"), PluginConfig{Name: "count-vowels", Limits: limits})
	bystander := newInstance(t, good)
	sibling := newInstance(t, bad)

	cases := []struct {
		fn, input string
		rc        uint32
		want      string // in the error
		broken    bool   // the instance must be discarded
		is        error
	}{
		{fn: "loop", rc: sys.ExitCodeDeadlineExceeded, want: "module closed with context deadline exceeded", broken: true, is: context.DeadlineExceeded},
		{fn: "membomb", rc: 1, want: "wasm error: unreachable", broken: true},
		{fn: "panic", rc: 1, want: "wasm error: unreachable", broken: true},
		{fn: "hugeout", rc: 1, want: "hugeout: host could not allocate 64 MiB"},
		{fn: "oob", input: "load_u64", rc: 1, want: "extism:host/env.load_u64: offset 4294967280, length 8 is out of bounds", broken: true},
		{fn: "oob", input: "load_u8", rc: 1, want: "extism:host/env.load_u8: offset 4294967280, length 1 is out of bounds", broken: true},
		{fn: "oob", input: "store_u64", rc: 1, want: "extism:host/env.store_u64: offset 4294967280, length 8 is out of bounds", broken: true},
		{fn: "oob", input: "store_u8", rc: 1, want: "extism:host/env.store_u8: offset 4294967280, length 1 is out of bounds", broken: true},
		{fn: "oob", input: "load_u64_wide", rc: 1, want: "extism:host/env.load_u64: offset 1099511627784, length 8 is out of bounds", broken: true},
		{fn: "oob", input: "output_set", rc: 1, want: "extism:host/env.output_set: offset 4294967280, length 1048576 is out of bounds", broken: true},
		{fn: "oob", input: "error_set", rc: 1, want: "extism:host/env.error_set: offset 4294967280, length 1 is out of bounds", broken: true},
		{fn: "oob", input: "nonsense", rc: 1, want: "oob: unknown case nonsense"},
	}
	for _, c := range cases {
		t.Run(c.fn+" "+c.input, func(t *testing.T) {
			inst := newInstance(t, bad)
			start := time.Now()
			out, rc, err := inst.Call(ctx, c.fn, []byte(c.input))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
			if rc != c.rc {
				t.Errorf("rc %d, want %d", rc, c.rc)
			}
			if len(out) != 0 {
				t.Errorf("output %.40q, want none", out)
			}
			if c.is != nil && !errors.Is(err, c.is) {
				t.Errorf("errors.Is(%v, %v) is false", err, c.is)
			}
			if elapsed := time.Since(start); elapsed > limits.CallTimeout+5*time.Second {
				t.Errorf("took %v to stop", elapsed)
			}
			if broken := inst.Err() != nil; broken != c.broken {
				t.Errorf("Err() = %v, want broken=%v", inst.Err(), c.broken)
			}
			if c.broken {
				if _, _, err := inst.Call(ctx, "oob", []byte("nonsense")); !errors.Is(err, ErrUnusable) {
					t.Errorf("a broken instance was called again: %v", err)
				}
			}
			if out, rc, err := bystander.Call(ctx, "count_vowels", []byte("still here")); err != nil || rc != 0 || !strings.Contains(string(out), `"count":3`) {
				t.Errorf("another plugin's instance: %q %d %v", out, rc, err)
			}
			if _, rc, err := sibling.Call(ctx, "oob", []byte("nonsense")); rc != 1 || err == nil || sibling.Err() != nil {
				t.Errorf("another instance of the plugin: %d %v %v", rc, err, sibling.Err())
			}
		})
	}
}

// TestOutputLimit shows a guest setting an output over Limits.MaxOutputBytes failing its call.
func TestOutputLimit(t *testing.T) {
	e := newTestEngine(t)
	p := loadFile(t, e, testplugins.Build(t, "misbehave"), PluginConfig{
		Name: "misbehave", Limits: Limits{MaxMemoryBytes: 256 << 20, MaxOutputBytes: 4 << 20, CallTimeout: 20 * time.Second}})
	inst := newInstance(t, p)
	_, rc, err := inst.Call(context.Background(), "hugeout", nil)
	if rc != 1 || !errors.Is(err, ErrOutputTooLarge) || !strings.Contains(err.Error(), "67108864 bytes, over the limit of 4194304 (limits.maxOutputBytes)") {
		t.Fatalf("rc %d, err %v", rc, err)
	}
	if inst.Err() == nil {
		t.Error("the instance is still considered usable")
	}
}

func TestInputLimit(t *testing.T) {
	e := newTestEngine(t)
	p := loadFile(t, e, testplugins.Build(t, "count-vowels"), PluginConfig{Limits: Limits{MaxInputBytes: 8}})
	inst := newInstance(t, p)
	_, rc, err := inst.Call(context.Background(), "count_vowels", []byte("123456789"))
	if rc != 1 || !errors.Is(err, ErrInputTooLarge) {
		t.Fatalf("rc %d, err %v", rc, err)
	}
	if inst.Err() != nil {
		t.Errorf("a refused input made the instance unusable: %v", inst.Err())
	}
	if _, rc, err := inst.Call(context.Background(), "count_vowels", []byte("12345678")); rc != 0 || err != nil {
		t.Errorf("input at the limit: rc %d, err %v", rc, err)
	}
}

// TestMemoryLimit: a module whose initial memory exceeds the limit is refused at load; growth
// beyond it fails inside the guest.
func TestMemoryLimit(t *testing.T) {
	ctx := context.Background()
	e := newTestEngine(t)
	wasm, err := os.ReadFile(sdkWasm(t, "count_vowels.wasm")) // 17 pages
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.Load(ctx, wasm, PluginConfig{Name: "cv", Permissions: Permissions{Vars: &Vars{}}, Limits: Limits{MaxMemoryBytes: 1 << 20}})
	if !errors.Is(err, ErrMemoryLimit) || !strings.Contains(err.Error(), "the module starts with 1088Ki of memory and tables of up to 1072, more than limits.maxMemory 1Mi") {
		t.Fatalf("load: %v", err)
	}
}
