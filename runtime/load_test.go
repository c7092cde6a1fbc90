package runtime

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/wasm-operator/wasm-operator/internal/testplugins"
)

// TestLoadRefusesUngranted: a module importing a host function whose permission is not granted is
// refused at load, with an error that names the import and the permission to grant.
func TestLoadRefusesUngranted(t *testing.T) {
	ctx := context.Background()
	e := newTestEngine(t)
	cases := []struct {
		name, wasm string
		perms      Permissions
		want       []string
	}{
		{"http", testplugins.Build(t, "http-fetch"), Permissions{Log: &Log{}},
			[]string{"import extism:host/env.http_request needs permissions.http"}},
		{"vars", testplugins.Build(t, "counter"), Permissions{},
			[]string{"import extism:host/env.var_get needs permissions.vars", "import extism:host/env.var_set needs permissions.vars"}},
		{"log", sdkWasm(t, "log.wasm"), Permissions{},
			[]string{"import extism:host/env.get_log_level needs permissions.log", "import extism:host/env.log_info needs permissions.log"}},
		// Differences from the SDK: hosts embedding the SDK may add host functions and link several
		// modules; a cluster plugin gets neither.
		{"user host function", sdkWasm(t, "host.wasm"), Permissions{},
			[]string{"import extism:host/user.mult is not a host function of ours (kv_get, kv_set, kv_delete, kv_list)"}},
		{"kv", testplugins.Build(t, "shared-counter"), Permissions{},
			[]string{"import extism:host/user.kv_get needs permissions.kv", "import extism:host/user.kv_set needs permissions.kv",
				"import extism:host/user.kv_list needs permissions.kv"}},
		{"linked module", sdkWasm(t, "main.wasm"), Permissions{},
			[]string{"import lib.capitalize is not provided by the host"}},
		{"observe instrumentation", sdkWasm(t, "nested.c.instr.wasm"), Permissions{},
			[]string{"import dylibso_observe.instrument_enter is not provided by the host"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			wasm, err := os.ReadFile(c.wasm)
			if err != nil {
				t.Fatal(err)
			}
			m, err := e.Compile(ctx, wasm)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close(ctx)
			_, err = e.NewPlugin(ctx, m, PluginConfig{Name: "ns/" + c.name, Permissions: c.perms})
			if err == nil {
				t.Fatal("loaded")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if !strings.HasPrefix(err.Error(), "load plugin ns/"+c.name+": ") {
				t.Errorf("error %q does not name the plugin", err)
			}
			var ie *ImportError
			if !errors.As(err, &ie) {
				t.Errorf("no *ImportError in %v", err)
			}
			if check := m.Check(c.perms, Limits{}); check == nil {
				t.Error("Check accepts what NewPlugin refuses")
			}
		})
	}
}

func TestCompileInvalid(t *testing.T) {
	e := newTestEngine(t)
	_, err := e.Compile(context.Background(), []byte("not wasm at all"))
	if !errors.Is(err, ErrInvalidModule) {
		t.Fatalf("got %v, want ErrInvalidModule", err)
	}
	if n := e.cachedModules(); n != 0 {
		t.Errorf("a failed compilation stayed cached (%d entries)", n)
	}
}

// TestModuleInfo shows what a controller reports in status.module.
func TestModuleInfo(t *testing.T) {
	ctx := context.Background()
	e := newTestEngine(t)
	wasm, err := os.ReadFile(testplugins.Build(t, "counter"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := e.Compile(ctx, wasm)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close(ctx)
	info := m.Info()
	if strings.Join(info.Exports, ",") != "increment,reset" {
		t.Errorf("exports %v", info.Exports)
	}
	if !info.WASI || info.ABI != ABIExtism {
		t.Errorf("WASI %v, ABI %q", info.WASI, info.ABI)
	}
	for _, imp := range []string{"extism:host/env.var_get", "extism:host/env.var_set"} {
		if !strings.Contains(strings.Join(info.Imports, " "), imp) {
			t.Errorf("imports %v lack %s", info.Imports, imp)
		}
	}
	if !strings.HasPrefix(m.Digest(), "sha256:") || len(m.Digest()) != 71 {
		t.Errorf("digest %q", m.Digest())
	}
}

// TestCompiledCacheShared: compiling the same bytes again shares the compilation, which is released
// with its last user.
func TestCompiledCacheShared(t *testing.T) {
	ctx := context.Background()
	e := newTestEngine(t)
	wasm, err := os.ReadFile(testplugins.Build(t, "greet"))
	if err != nil {
		t.Fatal(err)
	}
	m1, err := e.Compile(ctx, wasm)
	if err != nil {
		t.Fatal(err)
	}
	m2, err := e.Compile(ctx, wasm)
	if err != nil {
		t.Fatal(err)
	}
	if m1.c != m2.c {
		t.Fatal("two compilations of the same bytes")
	}
	p, err := e.NewPlugin(ctx, m1, PluginConfig{})
	if err != nil {
		t.Fatal(err)
	}
	m1.Close(ctx)
	m2.Close(ctx)
	if n := e.cachedModules(); n != 1 {
		t.Fatalf("the plugin's module was released: %d cached", n)
	}
	inst := newInstance(t, p)
	if out, _, err := inst.Call(ctx, "greet", []byte("you")); err != nil || string(out) != "Hello, you!" {
		t.Errorf("%q %v", out, err)
	}
	p.Close(ctx)
	if n := e.cachedModules(); n != 0 {
		t.Errorf("%d compilations cached after their last user closed", n)
	}
}
