package runtime

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	extism "github.com/extism/go-sdk"
	"github.com/go-logr/logr"
	"github.com/tetratelabs/wazero"

	"github.com/wasm-operator/wasm-operator/internal/testplugins"
)

// A conformance case runs one module on the Extism Go SDK and on this runtime, with the same
// functions, inputs, config and manifest settings as the SDK's own tests, and expects identical
// outputs, return codes and errors.
type confCase struct {
	name    string
	wasm    string // path
	config  map[string]string
	hosts   []string // nil: no HTTP permission
	private bool     // allow private networks (a local test server)
	timeout time.Duration
	vars    map[string][]byte // set before the first call; compared after the last
	logs    bool              // compare what the plugin logs at trace level
	calls   []confCall
}

type confCall struct {
	fn     string
	input  string
	cancel time.Duration // cancel the call's context after this long
}

// result is what one call gave.
type result struct {
	out []byte
	rc  uint32
	err error
}

// sdkWasm is a module of the Extism Go SDK's wasm/ folder, the conformance corpus.
func sdkWasm(tb testing.TB, name string) string { return testplugins.SDKWasm(tb, name) }

// conformanceCases are the SDK's tests (extism_test.go of github.com/extism/go-sdk v1.7.1) that a
// plugin host can reproduce, and our example plugins.
func conformanceCases(t *testing.T) []confCase {
	headerServer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Date"] = nil
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("X-Test", "conformance")
		fmt.Fprint(w, "<html>hello</html>")
	}))
	t.Cleanup(headerServer.Close)
	headerReq, _ := json.Marshal(map[string]string{"url": headerServer.URL})

	cv := func(in ...string) []confCall {
		var c []confCall
		for _, s := range in {
			c = append(c, confCall{fn: "count_vowels", input: s})
		}
		return c
	}
	run := []confCall{{fn: "run_test"}}
	cases := []confCase{
		{name: "alloc", wasm: sdkWasm(t, "alloc.wasm"), calls: run},
		{name: "unknown function", wasm: sdkWasm(t, "alloc.wasm"), calls: []confCall{{fn: "i_dont_exist"}}},
		{name: "config set", wasm: sdkWasm(t, "config.wasm"), config: map[string]string{"thing": "hello"}, calls: run},
		{name: "config unset", wasm: sdkWasm(t, "config.wasm"), calls: run},
		{name: "count_vowels", wasm: sdkWasm(t, "count_vowels.wasm"), calls: cv("hello world", "aaaaaa", "", "bbbbbbb", "aaa", "bbba")},
		{name: "fail", wasm: sdkWasm(t, "fail.wasm"), calls: run},
		{name: "hello", wasm: sdkWasm(t, "hello.wasm"), calls: run},
		{name: "hello_haskell", wasm: sdkWasm(t, "hello_haskell.wasm"), config: map[string]string{"greeting": "Howdy"},
			calls: []confCall{{fn: "testing", input: "John"}, {fn: "testing", input: "Jane"}}},
		{name: "http denied, no hosts", wasm: sdkWasm(t, "http.wasm"), hosts: []string{}, calls: run},
		{name: "http denied, other host", wasm: sdkWasm(t, "http.wasm"), hosts: []string{"google.*"}, calls: run},
		{name: "http headers", wasm: sdkWasm(t, "http_headers.wasm"), hosts: []string{"127.0.0.1"}, private: true,
			calls: []confCall{{fn: "http_get", input: string(headerReq)}}},
		{name: "input_offset", wasm: sdkWasm(t, "input_offset.wasm"), calls: []confCall{{fn: "input_offset_length", input: "hello world"}}},
		{name: "log", wasm: sdkWasm(t, "log.wasm"), logs: true, calls: run},
		{name: "sleep timeout", wasm: sdkWasm(t, "sleep.wasm"), config: map[string]string{"duration": "3"},
			timeout: 100 * time.Millisecond, calls: run},
		{name: "sleep cancel", wasm: sdkWasm(t, "sleep.wasm"), config: map[string]string{"duration": "3"},
			calls: []confCall{{fn: "run_test", cancel: 100 * time.Millisecond}}},
		{name: "sleep 0", wasm: sdkWasm(t, "sleep.wasm"), config: map[string]string{"duration": "0"}, calls: run},
		{name: "var", wasm: sdkWasm(t, "var.wasm"), vars: map[string][]byte{"a": {10, 0, 0, 0}}, calls: append(run, run...)},
		{name: "std_command", wasm: sdkWasm(t, "std_command.wasm"), calls: []confCall{{fn: "_start", input: "ben"}}},
		{name: "noop", wasm: sdkWasm(t, "noop.wasm"), calls: run},
		{name: "replace", wasm: sdkWasm(t, "replace.wasm"),
			calls: []confCall{{fn: "run_test", input: strings.Repeat("a test b ", 300)}, {fn: "run_test"}}},
	}
	for _, code := range []string{"-1", "500", "abc", ""} {
		c := confCase{name: "exit " + code, wasm: sdkWasm(t, "exit.wasm"), calls: []confCall{{fn: "_start"}}}
		if code != "" {
			c.config = map[string]string{"code": code}
		}
		cases = append(cases, c)
	}

	// Our example plugins.
	greet := testplugins.Build(t, "greet")
	counter := testplugins.Build(t, "counter")
	vowels := testplugins.Build(t, "count-vowels")
	fetch := testplugins.Build(t, "http-fetch")
	misbehave := testplugins.Build(t, "misbehave")
	fetchServer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprint(w, "fetched "+r.URL.Path)
	}))
	t.Cleanup(fetchServer.Close)
	cases = append(cases,
		confCase{name: "example greet", wasm: greet, config: map[string]string{"greeting": "Howdy"},
			calls: []confCall{{fn: "greet", input: "John"}, {fn: "greet"}}},
		confCase{name: "example greet default", wasm: greet, calls: []confCall{{fn: "greet", input: "Jane"}}},
		confCase{name: "example counter", wasm: counter,
			calls: []confCall{{fn: "increment"}, {fn: "increment"}, {fn: "reset"}, {fn: "increment"}}},
		confCase{name: "example count-vowels", wasm: vowels, calls: cv("hello world", "aaa", "", "xyz")},
		confCase{name: "example http-fetch", wasm: fetch, hosts: []string{"127.0.0.1"}, private: true, logs: true,
			calls: []confCall{{fn: "fetch", input: fetchServer.URL + "/a"}, {fn: "fetch", input: fetchServer.URL + "/missing"}}},
		confCase{name: "example http-fetch denied", wasm: fetch, hosts: []string{"example.com"},
			calls: []confCall{{fn: "fetch", input: fetchServer.URL + "/a"}}},
		confCase{name: "example misbehave error_set", wasm: misbehave, calls: []confCall{{fn: "oob", input: "nonsense"}}},
		confCase{name: "example misbehave panic", wasm: misbehave, calls: []confCall{{fn: "panic"}}},
	)
	return cases
}

func TestConformance(t *testing.T) {
	ctx := context.Background()
	e := newTestEngine(t)
	for _, c := range conformanceCases(t) {
		t.Run(c.name, func(t *testing.T) {
			want, wantLogs, wantVars := runSDK(t, c)
			got, gotLogs, gotVars := runOurs(t, ctx, e, c)
			for j := range c.calls {
				w, g := want[j], got[j]
				if !bytes.Equal(w.out, g.out) {
					t.Errorf("call %d %s(%.20q): output\n sdk: %q\nours: %q", j, c.calls[j].fn, c.calls[j].input, w.out, g.out)
				}
				if w.rc != g.rc {
					t.Errorf("call %d %s: rc sdk %d, ours %d", j, c.calls[j].fn, w.rc, g.rc)
				}
				if !sameError(w.err, g.err) {
					t.Errorf("call %d %s: error\n sdk: %v\nours: %v", j, c.calls[j].fn, w.err, g.err)
				}
			}
			if c.logs && !slices.Equal(wantLogs, gotLogs) {
				t.Errorf("logs\n sdk: %q\nours: %q", wantLogs, gotLogs)
			}
			for k, w := range wantVars {
				if !bytes.Equal(w, gotVars[k]) {
					t.Errorf("var %s: sdk %v, ours %v", k, w, gotVars[k])
				}
			}
		})
	}
}

// sameError compares errors as a plugin author sees them. Errors the guest sets must be identical.
// A trap's text is the same root message on both, but the stack traces wazero appends name
// different module instances, and this runtime prefixes the host function that refused the call
// and may add what to change; so the first line of ours must start with the SDK's root message.
func sameError(sdk, ours error) bool {
	if (sdk == nil) != (ours == nil) {
		return false
	}
	if sdk == nil || sdk.Error() == ours.Error() {
		return true
	}
	return strings.HasPrefix(rootMessage(ours), rootMessage(sdk))
}

func rootMessage(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	s = strings.TrimSuffix(s, " (recovered by wazero)")
	if rest, ok := strings.CutPrefix(s, KernelModule+"."); ok {
		if _, msg, ok := strings.Cut(rest, ": "); ok {
			s = msg
		}
	}
	return s
}

var sdkLogMu sync.Mutex // the SDK's log level is global

func runSDK(t *testing.T, c confCase) ([]result, []string, map[string][]byte) {
	ctx := context.Background()
	m := extism.Manifest{
		Wasm:         []extism.Wasm{extism.WasmFile{Path: c.wasm}},
		Config:       c.config,
		AllowedHosts: c.hosts,
		Timeout:      uint64(c.timeout.Milliseconds()),
	}
	cp, err := extism.NewCompiledPlugin(ctx, m, extism.PluginConfig{
		EnableWasi:                true,
		EnableHttpResponseHeaders: true,
		RuntimeConfig:             wazero.NewRuntimeConfig().WithCompilationCache(sdkCache).WithCloseOnContextDone(true),
	}, nil)
	if err != nil {
		t.Fatalf("sdk: %v", err)
	}
	defer cp.Close(ctx)
	p, err := cp.Instance(ctx, extism.PluginInstanceConfig{ModuleConfig: wazero.NewModuleConfig().WithSysWalltime()})
	if err != nil {
		t.Fatalf("sdk: %v", err)
	}
	defer p.Close(ctx)
	var logs []string
	if c.logs {
		sdkLogMu.Lock()
		defer sdkLogMu.Unlock()
		extism.SetLogLevel(extism.LogLevelTrace)
		defer extism.SetLogLevel(extism.LogLevelOff)
		p.SetLogger(func(l extism.LogLevel, msg string) {
			if !sdkOwnLog(msg) {
				logs = append(logs, strings.ToLower(l.String())+": "+msg)
			}
		})
	}
	for k, v := range c.vars {
		p.Var[k] = v
	}
	var res []result
	for _, cl := range c.calls {
		cctx, cancel := callContext(cl)
		rc, out, err := p.CallWithContext(cctx, cl.fn, []byte(cl.input))
		cancel()
		res = append(res, result{out, rc, err})
	}
	return res, logs, p.Var
}

var sdkCache = wazero.NewCompilationCache()

// sdkOwnLog reports the SDK's messages about itself, which it sends to the plugin's logger; only
// what the plugin logs is compared.
func sdkOwnLog(msg string) bool {
	for _, p := range []string{"Calling ", "Initializing runtime", "Initialized ", "No runtime detected",
		"WASI runtime detected", "Reactor module detected", "Command module detected", "Haskell runtime detected"} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

func callContext(c confCall) (context.Context, context.CancelFunc) {
	if c.cancel == 0 {
		return context.Background(), func() {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(c.cancel, cancel)
	return ctx, cancel
}

func runOurs(t *testing.T, ctx context.Context, e *Engine, c confCase) ([]result, []string, map[string][]byte) {
	wasm, err := os.ReadFile(c.wasm)
	if err != nil {
		t.Fatal(err)
	}
	var logs []string
	logger := logr.New(&captureSink{logs: &logs})
	cfg := PluginConfig{
		Name:        c.name,
		Config:      c.config,
		Limits:      Limits{CallTimeout: c.timeout},
		Logger:      logger,
		Permissions: Permissions{Vars: &Vars{}},
	}
	if c.logs {
		cfg.Permissions.Log = &Log{Level: LogTrace}
	} else {
		cfg.Permissions.Log = &Log{Level: LogOff}
	}
	if c.hosts != nil {
		cfg.Permissions.HTTP = &HTTP{AllowedHosts: c.hosts, AllowPrivateNetworks: c.private}
	}
	p, err := e.Load(ctx, wasm, cfg)
	if err != nil {
		t.Fatalf("ours: %v", err)
	}
	defer p.Close(ctx)
	inst, err := p.NewInstance(ctx)
	if err != nil {
		t.Fatalf("ours: %v", err)
	}
	defer inst.Close(ctx)
	for k, v := range c.vars {
		setVar(inst, k, v)
	}
	var res []result
	for _, cl := range c.calls {
		cctx, cancel := callContext(cl)
		out, rc, err := inst.Call(cctx, cl.fn, []byte(cl.input))
		cancel()
		res = append(res, result{out, rc, err})
	}
	vars := map[string][]byte{}
	for k, v := range inst.vars {
		vars[k] = v.value
	}
	return res, logs, vars
}

func setVar(i *Instance, k string, v []byte) {
	if i.vars == nil {
		i.vars = map[string]*varEntry{}
	}
	i.vars[k] = &varEntry{value: v}
	i.varBytes += varEntryOverhead + int64(len(k)+len(v))
	i.budget.other += varEntryOverhead + uint64(len(k)+len(v))
}

func newTestEngine(tb testing.TB) *Engine {
	tb.Helper()
	return newEngineWith(tb, EngineConfig{})
}

// newEngineWith starts an engine of cfg that is closed when the test ends.
func newEngineWith(tb testing.TB, cfg EngineConfig) *Engine {
	tb.Helper()
	e, err := NewEngine(context.Background(), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { e.Close(context.Background()) })
	return e
}

// captureSink records "level: message" for each plugin log line.
type captureSink struct {
	mu   sync.Mutex
	logs *[]string
}

func (s *captureSink) Init(logr.RuntimeInfo)                {}
func (s *captureSink) Enabled(int) bool                     { return true }
func (s *captureSink) WithValues(...any) logr.LogSink       { return s }
func (s *captureSink) WithName(string) logr.LogSink         { return s }
func (s *captureSink) Error(_ error, msg string, kv ...any) { s.add("error", msg) }
func (s *captureSink) Info(_ int, msg string, kv ...any) {
	level := "?"
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i] == "level" {
			level = fmt.Sprint(kv[i+1])
		}
	}
	s.add(level, msg)
}

func (s *captureSink) add(level, msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	*s.logs = append(*s.logs, level+": "+msg)
}
