package hostapi

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/client-go/kubernetes/fake"
)

func TestDisableAuthOnlyOnLoopback(t *testing.T) {
	tests := []struct {
		addr string
		ok   bool
	}{
		{"127.0.0.1:9443", true},
		{"127.0.0.2:9443", true},
		{"[::1]:9443", true},
		{"localhost:9443", true},
		{":9443", false},
		{"0.0.0.0:9443", false},
		{"[::]:9443", false},
		{"10.0.0.5:9443", false},
		{"node-a.example.com:9443", false},
		{"127.0.0.1", false}, // not a listen address
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			_, err := New(Options{Addr: tt.addr, DisableAuth: true, Invoker: &fakeInvoker{}, Registerer: prometheus.NewRegistry()})
			if tt.ok && err != nil {
				t.Fatalf("New refused auth off on loopback: %v", err)
			}
			if !tt.ok {
				if err == nil {
					t.Fatal("New accepted auth off on a non-loopback address")
				}
				if !strings.Contains(err.Error(), "only when listening on loopback") {
					t.Errorf("error %q does not say why", err)
				}
			}
		})
	}
}

func TestServeRefusesNonLoopbackListenerWithAuthOff(t *testing.T) {
	s, _ := newTestServer(t, &fakeInvoker{}, nil)
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	err = s.Serve(context.Background(), ln)
	if err == nil || !strings.Contains(err.Error(), "loopback only") {
		t.Fatalf("Serve on %s with auth off = %v, want a refusal", ln.Addr(), err)
	}
	if _, err := ln.Accept(); err == nil {
		t.Error("the refused listener is still open")
	}
}

func TestNewRequiresInvokerAndKube(t *testing.T) {
	if _, err := New(Options{Registerer: prometheus.NewRegistry()}); err == nil || !strings.Contains(err.Error(), "Invoker is required") {
		t.Errorf("New without Invoker = %v", err)
	}
	if _, err := New(Options{Invoker: &fakeInvoker{}, Registerer: prometheus.NewRegistry()}); err == nil || !strings.Contains(err.Error(), "Kube is required") {
		t.Errorf("New without Kube = %v", err)
	}
	if _, err := New(Options{Invoker: &fakeInvoker{}, Kube: fake.NewClientset(), Registerer: prometheus.NewRegistry()}); err != nil {
		t.Errorf("New with auth on any address: %v", err)
	}
}

func TestMetricsAfterCalls(t *testing.T) {
	inv := &fakeInvoker{limits: map[string]int64{"ns/echo": 4}}
	s, reg := newTestServer(t, inv, nil)
	srv := newHTTPServer(t, s)
	for _, body := range []string{"a", "bb", "toolong"} {
		resp, err := http.Post(srv+"/v1/namespaces/ns/wasmplugins/echo/call/run", "", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	m := s.Metrics()
	m.SetPool("ns", "echo", 3, 1, 2)
	m.CompileDuration.WithLabelValues("ns", "echo").Observe(0.002)
	m.LoadDuration.WithLabelValues("ns", "echo").Observe(0.01)
	m.LoadFailures.WithLabelValues("ns", "echo").Inc()

	want := `
# HELP wasm_operator_host_calls_total Plugin call requests by plugin, function and outcome.
# TYPE wasm_operator_host_calls_total counter
wasm_operator_host_calls_total{function="",name="echo",namespace="ns",outcome="too_large"} 1
wasm_operator_host_calls_total{function="run",name="echo",namespace="ns",outcome="ok"} 2
# HELP wasm_operator_host_pool_busy_instances Instances of the plugin's pool running a call.
# TYPE wasm_operator_host_pool_busy_instances gauge
wasm_operator_host_pool_busy_instances{name="echo",namespace="ns"} 1
# HELP wasm_operator_host_pool_idle_instances Idle instances in the plugin's pool.
# TYPE wasm_operator_host_pool_idle_instances gauge
wasm_operator_host_pool_idle_instances{name="echo",namespace="ns"} 3
# HELP wasm_operator_host_pool_waiting_calls Calls waiting for an instance of the plugin's pool.
# TYPE wasm_operator_host_pool_waiting_calls gauge
wasm_operator_host_pool_waiting_calls{name="echo",namespace="ns"} 2
# HELP wasm_operator_host_load_failures_total Plugin loads that failed.
# TYPE wasm_operator_host_load_failures_total counter
wasm_operator_host_load_failures_total{name="echo",namespace="ns"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"wasm_operator_host_calls_total", "wasm_operator_host_pool_busy_instances", "wasm_operator_host_pool_idle_instances",
		"wasm_operator_host_pool_waiting_calls", "wasm_operator_host_load_failures_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(m.CallDuration); n != 1 {
		t.Errorf("%d latency series, want 1 (calls that reached the invoker)", n)
	}
	if got := histogramCount(t, reg, "wasm_operator_host_call_duration_seconds"); got != 2 {
		t.Errorf("latency observations = %d, want 2", got)
	}

	// /metrics serves the same registry.
	resp, err := http.Get(srv + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `wasm_operator_host_calls_total{function="run",name="echo",namespace="ns",outcome="ok"} 2`) {
		t.Errorf("/metrics does not show the calls:\n%s", body)
	}

	m.Forget("ns", "echo")
	for _, c := range m.collectors() {
		if n := testutil.CollectAndCount(c); n != 0 {
			t.Errorf("%d series left after Forget", n)
		}
	}
}

func histogramCount(t *testing.T, g prometheus.Gatherer, name string) uint64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				n += m.GetHistogram().GetSampleCount()
			}
		}
	}
	return n
}

func TestUnservedPluginsDoNotGrowSeries(t *testing.T) {
	s, _ := newTestServer(t, &fakeInvoker{}, nil)
	for i := range 50 {
		req, _ := http.NewRequest("POST", "/v1/namespaces/ns"+string(rune('a'+i%26))+"/wasmplugins/p/call/f"+string(rune('a'+i%26)), nil)
		req.RequestURI = req.URL.Path
		s.Handler().ServeHTTP(discardWriter{}, req)
	}
	if n := testutil.CollectAndCount(s.Metrics().Calls); n != 1 {
		t.Errorf("%d series for 50 calls of unserved plugins, want 1", n)
	}
}

type discardWriter struct{}

func (discardWriter) Header() http.Header         { return http.Header{} }
func (discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (discardWriter) WriteHeader(int)             {}

// newHTTPServer serves s on a loopback port with Serve until the test ends, and returns its URL.
func newHTTPServer(t testing.TB, s *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return "http://" + ln.Addr().String()
}

func TestServeShutsDownGracefully(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	inv := &fakeInvoker{limits: map[string]int64{"ns/slow": 0}, invoke: func(ctx context.Context, _ string, _ []byte) ([]byte, error) {
		close(started)
		<-release
		return []byte("finished"), nil
	}}
	s, _ := newTestServer(t, inv, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()

	type result struct {
		body string
		err  error
	}
	res := make(chan result, 1)
	go func() {
		resp, err := http.Post("http://"+addr+"/v1/namespaces/ns/wasmplugins/slow/call/run", "", nil)
		if err != nil {
			res <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		res <- result{string(b), err}
	}()
	<-started
	cancel() // shutdown begins while the call runs
	select {
	case err := <-done:
		t.Fatalf("Serve returned %v before the in-flight call finished", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if r := <-res; r.err != nil || r.body != "finished" {
		t.Fatalf("in-flight call = %q, %v; want it to finish", r.body, r.err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Serve = %v after shutdown, want nil", err)
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Error("still listening after Serve returned")
	}
}

func TestRun(t *testing.T) {
	s, _ := newTestServer(t, &fakeInvoker{}, func(o *Options) { o.Addr = "127.0.0.1:0" })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Run(ctx); err != nil {
		t.Errorf("Run with a done context = %v, want nil", err)
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	s, _ = newTestServer(t, &fakeInvoker{}, func(o *Options) { o.Addr = busy.Addr().String() })
	if err := s.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "listen") {
		t.Errorf("Run on a used port = %v, want a listen error", err)
	}
}

func TestServeTLS(t *testing.T) {
	ts := httptest.NewTLSServer(http.NotFoundHandler()) // for its certificate and a client trusting it
	client := ts.Client()
	certs := ts.TLS.Certificates
	ts.Close()

	inv := &fakeInvoker{limits: map[string]int64{"ns/echo": 0}}
	s, _ := newTestServer(t, inv, func(o *Options) { o.TLSConfig = &tls.Config{Certificates: certs} })
	url := strings.Replace(newHTTPServer(t, s), "http://", "https://", 1)
	resp, err := client.Post(url+"/v1/namespaces/ns/wasmplugins/echo/call/run", "", strings.NewReader("over tls"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(b) != "over tls" || resp.TLS == nil {
		t.Errorf("call over TLS = %d %q (tls %v), want 200 and the input", resp.StatusCode, b, resp.TLS != nil)
	}
}
