package host

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	wasmv1 "github.com/wasm-operator/wasm-operator/api/v1alpha1"
	"github.com/wasm-operator/wasm-operator/internal/crashguard"
	"github.com/wasm-operator/wasm-operator/internal/hostapi"
	"github.com/wasm-operator/wasm-operator/internal/store"
	"github.com/wasm-operator/wasm-operator/internal/testplugins"
	wb "github.com/wasm-operator/wasm-operator/internal/wasmbuild"
	"github.com/wasm-operator/wasm-operator/runtime"
)

// table is a Plugins table over a fresh store holding the named example plugins.
type table struct {
	*Plugins
	digests map[string]string
}

func newTable(t testing.TB, names ...string) *table {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	st, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	eng, err := runtime.NewEngine(ctx, runtime.EngineConfig{CacheDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = eng.Close(ctx) })
	m, _ := hostapi.NewMetrics(nil)
	tb := &table{Plugins: &Plugins{Engine: eng, Store: st, Metrics: m, Log: logr.Discard()}, digests: map[string]string{}}
	for _, n := range names {
		wasm, err := os.ReadFile(testplugins.Build(t, n))
		if err != nil {
			t.Fatal(err)
		}
		e, err := st.Put(wasm)
		if err != nil {
			t.Fatal(err)
		}
		tb.digests[n] = e.Digest
	}
	return tb
}

func newObj(name, digest string, spec wasmv1.WasmPluginSpec) *wasmv1.WasmPlugin {
	return &wasmv1.WasmPlugin{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}, Spec: spec,
		Status: wasmv1.WasmPluginStatus{Artifact: &wasmv1.Artifact{Digest: digest}}}
}

func (tb *table) ensure(t testing.TB, obj *wasmv1.WasmPlugin) {
	t.Helper()
	if err := tb.Ensure(context.Background(), obj); err != nil {
		t.Fatalf("load %s: %v", obj.Name, err)
	}
}

func TestInvokeErrors(t *testing.T) {
	tb := newTable(t, "greet", "misbehave")
	tb.ensure(t, newObj("greet", tb.digests["greet"], wasmv1.WasmPluginSpec{Config: map[string]string{"greeting": "Hey"}}))
	tb.ensure(t, newObj("misbehave", tb.digests["misbehave"], wasmv1.WasmPluginSpec{
		Limits: &wasmv1.Limits{CallTimeout: &metav1.Duration{Duration: 300 * time.Millisecond}}}))
	ctx := context.Background()

	tests := []struct {
		name, plugin, function, input string
		want                          error
		wantPluginErr                 string
	}{
		{"not served", "nope", "greet", "", hostapi.ErrNotServed, ""},
		{"no such function", "greet", "nofunc", "", hostapi.ErrNoFunction, ""},
		{"endless loop times out", "misbehave", "loop", "", hostapi.ErrTimeout, ""},
		{"panic is a plugin error", "misbehave", "panic", "", nil, "unreachable"},
		{"wild pointer is a plugin error", "misbehave", "oob", "load_u64", nil, "out of bounds"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tb.Invoke(ctx, "default", tt.plugin, tt.function, []byte(tt.input))
			if tt.want != nil {
				if !errors.Is(err, tt.want) {
					t.Fatalf("err = %v, want %v", err, tt.want)
				}
			} else {
				var pe *hostapi.PluginError
				if !errors.As(err, &pe) || !strings.Contains(pe.Message, tt.wantPluginErr) {
					t.Fatalf("err = %v, want a plugin error with %q", err, tt.wantPluginErr)
				}
			}
			// The host is unharmed: the other plugin and the misbehaving one keep serving.
			if out, err := tb.Invoke(ctx, "default", "greet", "greet", []byte("you")); err != nil || string(out) != "Hey, you!" {
				t.Fatalf("greet after %s: %q, %v", tt.name, out, err)
			}
		})
	}
}

func TestInvokeSaturated(t *testing.T) {
	tb := newTable(t, "misbehave", "greet")
	one := int32(1)
	tb.ensure(t, newObj("misbehave", tb.digests["misbehave"], wasmv1.WasmPluginSpec{
		Limits: &wasmv1.Limits{CallTimeout: &metav1.Duration{Duration: 2 * time.Second}},
		Pool:   &wasmv1.PoolSpec{MaxConcurrency: &one, AcquireTimeout: &metav1.Duration{Duration: 50 * time.Millisecond}}}))
	ctx := context.Background()
	busy := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		close(busy)
		_, _ = tb.Invoke(ctx, "default", "misbehave", "loop", nil) // holds the only instance until its timeout
	}()
	<-busy
	var err error
	for {
		// Wait until the loop holds the instance, then the next call finds the pool saturated.
		if tb.get(types.NamespacedName{Namespace: "default", Name: "misbehave"}).cur.Load().pool.Stats().Busy == 1 {
			_, err = tb.Invoke(ctx, "default", "misbehave", "panic", nil)
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	var se *hostapi.SaturatedError
	if !errors.As(err, &se) || se.RetryAfter != 50*time.Millisecond {
		t.Fatalf("err = %v, want a SaturatedError with the acquire timeout as Retry-After", err)
	}
	wg.Wait()
}

// TestSwapKeepsServing: a new version replaces the old one only once it loaded; a version that cannot load
// leaves the old one serving and says why.
func TestSwapKeepsServing(t *testing.T) {
	tb := newTable(t, "greet", "count-vowels")
	ctx := context.Background()
	key := types.NamespacedName{Namespace: "default", Name: "p"}
	tb.ensure(t, newObj("p", tb.digests["greet"], wasmv1.WasmPluginSpec{}))

	missing := "sha256:" + strings.Repeat("0", 64)
	if err := tb.Ensure(ctx, newObj("p", missing, wasmv1.WasmPluginSpec{})); err == nil {
		t.Fatal("a module missing from the cache loaded")
	}
	e, _ := tb.State(key)
	if e.Phase != wasmv1.NodePhaseFailed || e.Digest != tb.digests["greet"] ||
		!strings.Contains(e.Message, "missing from the shared cache") || !strings.Contains(e.Message, "serving") {
		t.Fatalf("entry after a failed load = %+v; want Failed, still serving greet, saying why", e)
	}
	if out, err := tb.Invoke(ctx, "default", "p", "greet", []byte("x")); err != nil || string(out) != "Hello, x!" {
		t.Fatalf("old version stopped serving: %q %v", out, err)
	}

	tb.ensure(t, newObj("p", tb.digests["count-vowels"], wasmv1.WasmPluginSpec{Permissions: &wasmv1.Permissions{Vars: &wasmv1.VarsPermission{}}}))
	e, _ = tb.State(key)
	if e.Phase != wasmv1.NodePhaseReady || e.Digest != tb.digests["count-vowels"] || e.Message != "" {
		t.Fatalf("entry after the swap = %+v", e)
	}
	if out, err := tb.Invoke(ctx, "default", "p", "count_vowels", []byte("aa")); err != nil || !strings.Contains(string(out), `"count":2`) {
		t.Fatalf("new version: %q %v", out, err)
	}
	if !tb.Unload(key) {
		t.Fatal("Unload did not find the plugin")
	}
	if _, err := tb.Invoke(ctx, "default", "p", "count_vowels", nil); !errors.Is(err, hostapi.ErrNotServed) {
		t.Fatalf("after Unload: %v, want ErrNotServed", err)
	}
}

// TestRevokedPermissionStopsServing: when the spec takes a permission back, the old version, which holds
// the grant, stops serving instead of keeping it.
func TestRevokedPermissionStopsServing(t *testing.T) {
	tb := newTable(t, "counter")
	ctx := context.Background()
	granted := wasmv1.WasmPluginSpec{Permissions: &wasmv1.Permissions{Vars: &wasmv1.VarsPermission{}}}
	tb.ensure(t, newObj("c", tb.digests["counter"], granted))
	if out, err := tb.Invoke(ctx, "default", "c", "increment", nil); err != nil || string(out) != "1" {
		t.Fatalf("increment: %q %v", out, err)
	}
	if err := tb.Ensure(ctx, newObj("c", tb.digests["counter"], wasmv1.WasmPluginSpec{})); err == nil {
		t.Fatal("a module needing vars loaded without the vars permission")
	}
	if _, err := tb.Invoke(ctx, "default", "c", "increment", nil); !errors.Is(err, hostapi.ErrNotServed) {
		t.Fatalf("after the permission was revoked: %v, want ErrNotServed", err)
	}
	e, _ := tb.State(types.NamespacedName{Namespace: "default", Name: "c"})
	if e.Phase != wasmv1.NodePhaseFailed || e.Digest != "" || !strings.Contains(e.Message, "needs permissions.vars") ||
		!strings.Contains(e.Message, "stopped serving") {
		t.Fatalf("entry = %+v", e)
	}
}

// TestCrashedVersionRefused: a version whose load was in progress at two crashes in a row (the second
// time as a suspect) is refused (Failed, "crashed the host") without loading it, while other plugins
// load; a new version loads again.
func TestCrashedVersionRefused(t *testing.T) {
	tb := newTable(t, "greet", "count-vowels")
	dir := t.TempDir()
	crashed := newObj("bad", tb.digests["greet"], wasmv1.WasmPluginSpec{})
	g, err := crashguard.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	// The host began loading this version and crashed, twice.
	for range 2 {
		if err := g.Begin("default/bad", versionKey(crashed, tb.digests["greet"])); err != nil {
			t.Fatal(err)
		}
		if g, err = crashguard.Open(dir); err != nil {
			t.Fatal(err)
		}
	}
	tb.Guard = g // restarted
	if err := tb.Ensure(context.Background(), crashed); err != nil {
		t.Fatalf("Ensure of the crashed version: %v (it must not be retried)", err)
	}
	e, _ := tb.State(types.NamespacedName{Namespace: "default", Name: "bad"})
	if e.Phase != wasmv1.NodePhaseFailed || !strings.Contains(e.Message, "crashed the host while it loaded it") || e.Digest != "" {
		t.Errorf("crashed version: %+v", e)
	}
	tb.ensure(t, newObj("good", tb.digests["count-vowels"], wasmv1.WasmPluginSpec{}))
	if e, _ := tb.State(types.NamespacedName{Namespace: "default", Name: "good"}); e.Phase != wasmv1.NodePhaseReady {
		t.Errorf("other plugin: %+v", e)
	}
	changed := newObj("bad", tb.digests["greet"], wasmv1.WasmPluginSpec{Config: map[string]string{"greeting": "Hi"}})
	tb.ensure(t, changed)
	if e, _ := tb.State(types.NamespacedName{Namespace: "default", Name: "bad"}); e.Phase != wasmv1.NodePhaseReady {
		t.Errorf("changed spec: %+v", e)
	}
}

func TestInitTimeout(t *testing.T) {
	for _, tc := range []struct{ call, max, want time.Duration }{
		{0, 0, runtime.DefaultInitTimeout},
		{0, 30 * time.Second, runtime.DefaultInitTimeout},
		{2 * time.Second, 30 * time.Second, 2 * time.Second},
		{10 * time.Minute, 30 * time.Second, 30 * time.Second},
		{10 * time.Minute, 0, 10 * time.Minute},
		{0, time.Second, time.Second},
	} {
		if got := InitTimeout(tc.call, tc.max); got != tc.want {
			t.Errorf("InitTimeout(%v, %v) = %v, want %v", tc.call, tc.max, got, tc.want)
		}
	}
}

// TestMaxInitTimeout: a start section that never returns, in a plugin whose callTimeout is ten minutes,
// holds the host's load no longer than the host's cap, and the error names the cap.
func TestMaxInitTimeout(t *testing.T) {
	tb := newTable(t)
	tb.MaxInitTimeout = 500 * time.Millisecond
	startLoop := (&wb.Module{Types: []wb.FuncType{{}, {Results: []byte{wb.I32}}},
		Funcs:   []wb.Func{{Type: 0, Body: wb.Loop()}, {Type: 1, Body: wb.Body(wb.I32Const(0))}},
		Exports: []wb.Export{{Name: "run", Kind: wb.ExportFunc, Index: 1}}, Start: wb.Index(0)}).Bytes()
	e, err := tb.Store.Put(startLoop)
	if err != nil {
		t.Fatal(err)
	}
	obj := newObj("start-loop", e.Digest, wasmv1.WasmPluginSpec{Limits: &wasmv1.Limits{CallTimeout: &metav1.Duration{Duration: 10 * time.Minute}}})
	start := time.Now()
	err = tb.Ensure(context.Background(), obj)
	if err == nil || !strings.Contains(err.Error(), "within 500ms (the host's init timeout, manager host --max-init-timeout)") {
		t.Fatalf("load of a start loop = %v, want the host's init timeout named", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the load took %v under a 500ms cap", d)
	}
}

// TestRequestIDInPluginLogs: a plugin's log lines of a call carry the request id its caller sent (and
// got back) in X-Request-Id, so a caller's report finds the host's lines.
func TestRequestIDInPluginLogs(t *testing.T) {
	tb := newTable(t, "http-fetch")
	var mu sync.Mutex
	var lines []string
	tb.Log = funcr.New(func(prefix, args string) {
		mu.Lock()
		defer mu.Unlock()
		lines = append(lines, args)
	}, funcr.Options{Verbosity: 10})
	tb.ensure(t, newObj("fetch", tb.digests["http-fetch"], wasmv1.WasmPluginSpec{Permissions: &wasmv1.Permissions{
		HTTP: &wasmv1.HTTPPermission{AllowedHosts: []string{"example.invalid"}},
		Log:  &wasmv1.LogPermission{Level: wasmv1.LogLevelDebug}}}))
	srv, err := hostapi.New(hostapi.Options{Invoker: tb.Plugins, DisableAuth: true, Metrics: tb.Metrics, Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest(http.MethodPost, "/v1/namespaces/default/wasmplugins/fetch/call/fetch", strings.NewReader("http://example.invalid/x"))
	req.Header.Set("X-Request-Id", "req-42")
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, req)
	if got := rec.Header().Get("X-Request-Id"); got != "req-42" {
		t.Fatalf("X-Request-Id = %q", got)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, l := range lines {
		if strings.Contains(l, "fetching http://example.invalid/x") {
			if !strings.Contains(l, `"call"="req-42"`) {
				t.Fatalf("the plugin's log line lacks the request id: %s", l)
			}
			return
		}
	}
	t.Fatalf("no plugin log line of the call in %q", lines)
}
