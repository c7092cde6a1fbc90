package testplugins_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	extism "github.com/extism/go-sdk"
	"github.com/tetratelabs/wazero"

	"github.com/wasm-operator/wasm-operator/internal/testplugins"
)

// The Extism Go SDK is the oracle: a plugin that behaves as specified under
// it speaks the Extism ABI, so our pdk is right.

type sdkOptions struct {
	config       map[string]string
	allowedHosts []string
	maxPages     uint32
	headers      bool
}

// compilationCache shares compiled plugins between the tests' runtimes.
var compilationCache = wazero.NewCompilationCache()

func newSDKPlugin(t *testing.T, wasmPath string, o sdkOptions) *extism.Plugin {
	t.Helper()
	ctx := context.Background()
	manifest := extism.Manifest{
		Wasm:         []extism.Wasm{extism.WasmFile{Path: wasmPath}},
		Config:       o.config,
		AllowedHosts: o.allowedHosts,
	}
	if o.maxPages > 0 {
		manifest.Memory = &extism.ManifestMemory{MaxPages: o.maxPages, MaxHttpResponseBytes: -1, MaxVarBytes: -1}
	}
	compiled, err := extism.NewCompiledPlugin(ctx, manifest, extism.PluginConfig{
		EnableWasi:                true,
		EnableHttpResponseHeaders: o.headers,
		RuntimeConfig:             wazero.NewRuntimeConfig().WithCloseOnContextDone(true).WithCompilationCache(compilationCache),
	}, nil)
	if err != nil {
		t.Fatalf("compile %s: %v", wasmPath, err)
	}
	t.Cleanup(func() { compiled.Close(context.Background()) })
	p, err := compiled.Instance(ctx, extism.PluginInstanceConfig{})
	if err != nil {
		t.Fatalf("instantiate %s: %v", wasmPath, err)
	}
	t.Cleanup(func() { p.Close(context.Background()) })
	return p
}

// call runs function and fails the test unless it succeeds.
func call(t *testing.T, p *extism.Plugin, function, input string) string {
	t.Helper()
	rc, out, err := p.Call(function, []byte(input))
	if err != nil || rc != 0 {
		t.Fatalf("%s(%q): rc %d, err %v", function, input, rc, err)
	}
	return string(out)
}

func TestNames(t *testing.T) {
	names, err := testplugins.Names()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"count-vowels", "counter", "greet", "http-fetch", "misbehave", "shared-counter"}
	for _, w := range want {
		if !slices.Contains(names, w) {
			t.Errorf("Names() = %v, missing %q", names, w)
		}
	}
}

func TestGreet(t *testing.T) {
	wasm := testplugins.Build(t, "greet")
	tests := []struct {
		name   string
		config map[string]string
		input  string
		want   string
	}{
		{"default greeting", nil, "world", "Hello, world!"},
		{"configured greeting", map[string]string{"greeting": "Bonjour"}, "monde", "Bonjour, monde!"},
		{"empty input", nil, "", "Hello, !"},
		// The ABI has no empty values: an empty greeting reads as unset.
		{"empty greeting", map[string]string{"greeting": ""}, "x", "Hello, x!"},
		{"unicode", map[string]string{"greeting": "Grüß dich"}, "Jürgen 👋", "Grüß dich, Jürgen 👋!"},
		{"long input", nil, strings.Repeat("ab", 5000), "Hello, " + strings.Repeat("ab", 5000) + "!"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newSDKPlugin(t, wasm, sdkOptions{config: tt.config})
			if got := call(t, p, "greet", tt.input); got != tt.want {
				t.Errorf("greet(%q) = %q, want %q", tt.input, got, tt.want)
			}
		})
	}
}

func TestCountVowels(t *testing.T) {
	ours := newSDKPlugin(t, testplugins.Build(t, "count-vowels"), sdkOptions{})
	want := []struct{ input, output string }{
		{"aaa", `{"count":3,"total":3,"vowels":"aeiouAEIOU"}`},
		{"bbba", `{"count":1,"total":4,"vowels":"aeiouAEIOU"}`},
		{"", `{"count":0,"total":4,"vowels":"aeiouAEIOU"}`},
		{"Hello, World!", `{"count":3,"total":7,"vowels":"aeiouAEIOU"}`},
	}
	for _, w := range want {
		if got := call(t, ours, "count_vowels", w.input); got != w.output {
			t.Errorf("count_vowels(%q) = %s, want %s", w.input, got, w.output)
		}
	}

	// Side by side with the plugin the Extism Go SDK tests with.
	theirs := newSDKPlugin(t, testplugins.SDKWasm(t, "count_vowels.wasm"), sdkOptions{})
	fresh := newSDKPlugin(t, testplugins.Build(t, "count-vowels"), sdkOptions{})
	for _, input := range []string{"aaa", "bbba", "benjamin", "", "AEIOU xyz"} {
		got := call(t, fresh, "count_vowels", input)
		ref := call(t, theirs, "count_vowels", input)
		if got != ref {
			t.Errorf("count_vowels(%q): ours %s, Extism's %s", input, got, ref)
		}
	}
}

func TestCounter(t *testing.T) {
	wasm := testplugins.Build(t, "counter")
	p := newSDKPlugin(t, wasm, sdkOptions{})
	for _, want := range []string{"1", "2", "3"} {
		if got := call(t, p, "increment", ""); got != want {
			t.Fatalf("increment = %q, want %q", got, want)
		}
	}
	if got := string(p.Var["count"]); got != "3" {
		t.Errorf("host variable count = %q, want %q", got, "3")
	}
	if got := call(t, p, "reset", ""); got != "0" {
		t.Errorf("reset = %q, want %q", got, "0")
	}
	if _, ok := p.Var["count"]; ok {
		t.Errorf("variable count still set after reset: %q", p.Var["count"])
	}
	if got := call(t, p, "increment", ""); got != "1" {
		t.Errorf("increment after reset = %q, want %q", got, "1")
	}

	// Variables belong to one instance.
	other := newSDKPlugin(t, wasm, sdkOptions{})
	if got := call(t, other, "increment", ""); got != "1" {
		t.Errorf("increment on a second instance = %q, want %q", got, "1")
	}

	// A variable the plugin cannot parse is a clear error, not a crash.
	p.Var["count"] = []byte("many")
	rc, _, err := p.Call("increment", nil)
	if rc != 1 || err == nil || err.Error() != `variable count holds "many", not a number` {
		t.Errorf("increment with a bad variable: rc %d, err %v", rc, err)
	}
}

func TestHTTPFetch(t *testing.T) {
	wasm := testplugins.Build(t, "http-fetch")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/hello":
			if r.Method != http.MethodGet {
				http.Error(w, "want GET", http.StatusMethodNotAllowed)
				return
			}
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Write([]byte("hello from the server"))
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	allowed := []string{"127.0.0.1"}

	var logsMu sync.Mutex
	var logs []string
	extism.SetLogLevel(extism.LogLevelDebug)
	defer extism.SetLogLevel(extism.LogLevelOff)

	p := newSDKPlugin(t, wasm, sdkOptions{allowedHosts: allowed, headers: true})
	p.SetLogger(func(level extism.LogLevel, msg string) {
		logsMu.Lock()
		defer logsMu.Unlock()
		logs = append(logs, level.String()+" "+msg)
	})
	if got := call(t, p, "fetch", srv.URL+"/hello"); got != "hello from the server" {
		t.Errorf("fetch /hello = %q", got)
	}
	logsMu.Lock()
	if !slices.Contains(logs, "DEBUG fetching "+srv.URL+"/hello") {
		t.Errorf("plugin's debug log not seen; logs: %q", logs)
	}
	logsMu.Unlock()

	if got := call(t, p, "fetch", srv.URL+"/empty"); got != "" {
		t.Errorf("fetch /empty = %q, want empty", got)
	}
	rc, _, err := p.Call("fetch", []byte(srv.URL+"/missing"))
	if wantErr := "GET " + srv.URL + "/missing: status 404"; rc != 1 || err == nil || err.Error() != wantErr {
		t.Errorf("fetch /missing: rc %d, err %v; want rc 1, err %q", rc, err, wantErr)
	}
	if got := call(t, p, "content_type", srv.URL+"/hello"); got != "text/plain; charset=utf-8" {
		t.Errorf("content_type = %q", got)
	}

	// Without response headers enabled the plugin sees none, and says so.
	noHeaders := newSDKPlugin(t, wasm, sdkOptions{allowedHosts: allowed})
	if got := call(t, noHeaders, "content_type", srv.URL+"/hello"); got != "" {
		t.Errorf("content_type without headers = %q, want empty", got)
	}

	// A host the plugin may not reach stops the call in the host.
	denied := newSDKPlugin(t, wasm, sdkOptions{allowedHosts: []string{"example.com"}})
	rc, out, err := denied.Call("fetch", []byte(srv.URL+"/hello"))
	if err == nil || !strings.Contains(err.Error(), "not allowed") || len(out) != 0 {
		t.Errorf("fetch from a host not allowed: rc %d, out %q, err %v", rc, out, err)
	}
}

func TestMisbehave(t *testing.T) {
	wasm := testplugins.Build(t, "misbehave")
	greet := testplugins.Build(t, "greet")
	const maxPages = 512 // 32 MiB
	tests := []struct {
		export string
		input  string
		// errText is part of the error the SDK reports.
		errText string
	}{
		{"loop", "", "deadline exceeded"},
		{"membomb", "", "runtime.mallocgc"},
		{"panic", "", "runtime.gopanic"},
		{"hugeout", "", "hugeout: host could not allocate 64 MiB"},
		{"oob", "", "could not read value"},
		{"oob", "load_u64", "could not read value"},
		{"oob", "store_u64", "could not write value"},
	}
	for _, tt := range tests {
		t.Run(tt.export+"/"+tt.input, func(t *testing.T) {
			p := newSDKPlugin(t, wasm, sdkOptions{maxPages: maxPages})
			// The deadline is what stops loop; the others fail on their own, and membomb's 32 MiB of
			// allocations took longer than a second once under the race detector on a busy machine.
			timeout := 30 * time.Second
			if tt.export == "loop" {
				timeout = time.Second
			}
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			start := time.Now()
			rc, out, err := p.CallWithContext(ctx, tt.export, []byte(tt.input))
			if err == nil || rc == 0 {
				t.Fatalf("%s(%q) succeeded: rc %d, %d bytes of output", tt.export, tt.input, rc, len(out))
			}
			if !strings.Contains(err.Error(), tt.errText) {
				t.Errorf("%s(%q): err %q, want it to contain %q", tt.export, tt.input, err, tt.errText)
			}
			if tt.export == "loop" && time.Since(start) > 5*time.Second {
				t.Errorf("loop ran %v past a 1s timeout", time.Since(start))
			}
			// The host is unharmed: other plugins keep working.
			other := newSDKPlugin(t, greet, sdkOptions{maxPages: maxPages})
			if got := call(t, other, "greet", "still here"); got != "Hello, still here!" {
				t.Errorf("greet after %s = %q", tt.export, got)
			}
		})
	}

	// Without a memory limit the huge output arrives whole.
	t.Run("hugeout/unlimited", func(t *testing.T) {
		p := newSDKPlugin(t, wasm, sdkOptions{})
		out := call(t, p, "hugeout", "")
		if len(out) != 64<<20 || strings.Trim(out, "x") != "" {
			t.Errorf("hugeout: %d bytes, want 64 MiB of 'x'", len(out))
		}
	})
}

// Out-of-bounds cases the Extism Go SDK lets through: its kernel ignores
// loads and stores past the end of its memory, it adds the input offset to
// input_load_u64's argument in 32 bits (wrapping around) and truncates wide
// offsets to 32 bits, and it reads an output or error it cannot reach as
// empty. They are pinned here so a change in the oracle is noticed; hosts of
// our own must refuse them.
func TestMisbehaveOOBAcceptedBySDK(t *testing.T) {
	wasm := testplugins.Build(t, "misbehave")
	tests := []struct {
		input  string
		rc     uint32
		output string
	}{
		{"load_u8", 0, "host accepted out-of-bounds load_u8"},
		{"store_u8", 0, "host accepted out-of-bounds store_u8"},
		{"input_load_u64", 0, "host accepted out-of-bounds input_load_u64"},
		{"input_load_u8", 0, "host accepted out-of-bounds input_load_u8"},
		{"load_u64_wide", 0, "host accepted out-of-bounds load_u64_wide"},
		{"output_set", 0, ""},
		{"error_set", 1, ""},
	}
	for _, tt := range tests {
		t.Run(tt.input, func(t *testing.T) {
			p := newSDKPlugin(t, wasm, sdkOptions{maxPages: 512})
			rc, out, err := p.Call("oob", []byte(tt.input))
			if rc != tt.rc || string(out) != tt.output || err != nil {
				t.Errorf("oob(%q) under the Extism Go SDK: rc %d, output %.60q, err %v; was rc %d, output %q, no error",
					tt.input, rc, out, err, tt.rc, tt.output)
			}
		})
	}
}

// A plugin imports only the host functions it uses, so a host can grant it
// the least permissions.
func TestImports(t *testing.T) {
	tests := []struct {
		plugin  string
		want    []string
		notWant []string
	}{
		{"greet", []string{"config_get", "output_set"}, []string{"var_get", "var_set", "http_request", "log_info", "get_log_level"}},
		{"count-vowels", []string{"input_load_u64", "output_set"}, []string{"config_get", "var_get", "http_request", "log_info"}},
		{"counter", []string{"var_get", "var_set"}, []string{"config_get", "http_request", "log_info"}},
		{"shared-counter", []string{"alloc", "free", "output_set"}, []string{"var_get", "var_set", "http_request", "log_info"}},
		{"http-fetch", []string{"http_request", "http_status_code", "http_headers", "get_log_level", "log_debug"}, []string{"config_get", "var_get"}},
		{"misbehave", []string{"load_u64", "store_u64"}, []string{"config_get", "var_get", "http_request"}},
	}
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	defer rt.Close(ctx)
	for _, tt := range tests {
		t.Run(tt.plugin, func(t *testing.T) {
			b, err := os.ReadFile(testplugins.Build(t, tt.plugin))
			if err != nil {
				t.Fatal(err)
			}
			m, err := rt.CompileModule(ctx, b)
			if err != nil {
				t.Fatal(err)
			}
			imports := map[string]bool{}
			for _, f := range m.ImportedFunctions() {
				mod, name, _ := f.Import()
				if mod == "extism:host/env" {
					imports[name] = true
				}
			}
			for _, w := range tt.want {
				if !imports[w] {
					t.Errorf("%s does not import %s", tt.plugin, w)
				}
			}
			for _, n := range tt.notWant {
				if imports[n] {
					t.Errorf("%s imports %s, which it does not use", tt.plugin, n)
				}
			}
			if m.ExportedFunctions()["_initialize"] == nil {
				t.Errorf("%s is not a WASI reactor (no _initialize)", tt.plugin)
			}
		})
	}
}

func TestBuildToCaches(t *testing.T) {
	dir := t.TempDir()
	path, err := testplugins.BuildTo(dir, "greet")
	if err != nil {
		t.Fatal(err)
	}
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	again, err := testplugins.BuildTo(dir, "greet")
	if err != nil {
		t.Fatal(err)
	}
	after, err := os.Stat(again)
	if err != nil {
		t.Fatal(err)
	}
	if again != path || !after.ModTime().Equal(before.ModTime()) {
		t.Errorf("second BuildTo rebuilt: %s (%v) then %s (%v)", path, before.ModTime(), again, after.ModTime())
	}
	leftovers, _ := filepath.Glob(filepath.Join(dir, ".*"))
	if len(leftovers) > 0 {
		t.Errorf("temporary files left behind: %v", leftovers)
	}
}

func TestBuildToRefusesBadNames(t *testing.T) {
	for _, name := range []string{"", "../pdk", ".hidden", "no-such-plugin"} {
		if _, err := testplugins.BuildTo(t.TempDir(), name); err == nil {
			t.Errorf("BuildTo(%q) succeeded", name)
		}
	}
}
