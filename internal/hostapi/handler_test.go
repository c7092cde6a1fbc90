package hostapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// fakeInvoker serves the plugins in limits; its invoke func decides each call.
type fakeInvoker struct {
	limits map[string]int64 // "ns/name" -> maxInputBytes
	invoke func(ctx context.Context, function string, input []byte) ([]byte, error)

	mu      sync.Mutex
	calls   int
	lastCtx context.Context
}

func (f *fakeInvoker) MaxInputBytes(ns, name string) (int64, bool) {
	l, ok := f.limits[ns+"/"+name]
	return l, ok
}

func (f *fakeInvoker) Invoke(ctx context.Context, ns, name, function string, input []byte) ([]byte, error) {
	f.mu.Lock()
	f.calls++
	f.lastCtx = ctx
	f.mu.Unlock()
	if f.invoke == nil {
		return append([]byte(nil), input...), nil
	}
	return f.invoke(ctx, function, input)
}

func newTestServer(t testing.TB, inv Invoker, mod func(*Options)) (*Server, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	opts := Options{Addr: "127.0.0.1:0", DisableAuth: true, Invoker: inv, Registerer: reg}
	if mod != nil {
		mod(&opts)
	}
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return s, reg
}

func TestCallStatusMapping(t *testing.T) {
	tests := []struct {
		name       string
		method     string
		path       string
		body       string
		header     map[string]string
		invoke     func(context.Context, string, []byte) ([]byte, error)
		wantStatus int
		wantBody   string // exact when wantExact, else a substring
		wantExact  bool
		wantHeader map[string]string
		outcome    string
		labels     [3]string // namespace, name, function of the counted call
	}{
		{
			name: "ok echoes the output", method: "POST", path: "/v1/namespaces/ns/wasmplugins/echo/call/run", body: "hello",
			wantStatus: 200, wantBody: "hello", wantExact: true,
			wantHeader: map[string]string{"Content-Type": "application/octet-stream"},
			outcome:    OutcomeOK, labels: [3]string{"ns", "echo", "run"},
		},
		{
			name: "empty input is a call", method: "POST", path: "/v1/namespaces/ns/wasmplugins/echo/call/run",
			wantStatus: 200, wantBody: "", wantExact: true, outcome: OutcomeOK, labels: [3]string{"ns", "echo", "run"},
		},
		{
			name: "not served here", method: "POST", path: "/v1/namespaces/ns/wasmplugins/nope/call/run", body: "x",
			wantStatus: 404, wantBody: "wasmplugin ns/nope is not served on this node", outcome: OutcomeNotFound,
		},
		{
			name: "unloaded between lookup and call", method: "POST", path: "/v1/namespaces/ns/wasmplugins/echo/call/run",
			invoke: func(context.Context, string, []byte) ([]byte, error) {
				return nil, fmt.Errorf("acquire: %w", ErrNotServed)
			},
			wantStatus: 404, wantBody: "not served on this node", outcome: OutcomeNotFound,
		},
		{
			name: "unknown function", method: "POST", path: "/v1/namespaces/ns/wasmplugins/echo/call/nofn",
			invoke: func(context.Context, string, []byte) ([]byte, error) {
				return nil, fmt.Errorf("call: %w", ErrNoFunction)
			},
			wantStatus: 404, wantBody: `exports no function "nofn"`, outcome: OutcomeNotFound, labels: [3]string{"ns", "echo", ""},
		},
		{
			name: "input over the cap", method: "POST", path: "/v1/namespaces/ns/wasmplugins/small/call/run", body: "12345678901",
			wantStatus: 413, wantBody: "at most 10 bytes", outcome: OutcomeTooLarge, labels: [3]string{"ns", "small", ""},
		},
		{
			name: "input at the cap", method: "POST", path: "/v1/namespaces/ns/wasmplugins/small/call/run", body: "1234567890",
			wantStatus: 200, wantBody: "1234567890", wantExact: true, outcome: OutcomeOK, labels: [3]string{"ns", "small", "run"},
		},
		{
			name: "invoker says too large", method: "POST", path: "/v1/namespaces/ns/wasmplugins/echo/call/run",
			invoke:     func(context.Context, string, []byte) ([]byte, error) { return nil, ErrInputTooLarge },
			wantStatus: 413, wantBody: "input too large", outcome: OutcomeTooLarge, labels: [3]string{"ns", "echo", "run"},
		},
		{
			name: "saturated with retry after", method: "POST", path: "/v1/namespaces/ns/wasmplugins/echo/call/run",
			invoke: func(context.Context, string, []byte) ([]byte, error) {
				return nil, fmt.Errorf("acquire: %w", &SaturatedError{RetryAfter: 2500 * time.Millisecond})
			},
			wantStatus: 429, wantBody: "saturated", wantHeader: map[string]string{"Retry-After": "3"},
			outcome: OutcomeSaturated, labels: [3]string{"ns", "echo", "run"},
		},
		{
			name: "saturated without retry after", method: "POST", path: "/v1/namespaces/ns/wasmplugins/echo/call/run",
			invoke:     func(context.Context, string, []byte) ([]byte, error) { return nil, ErrSaturated },
			wantStatus: 429, wantHeader: map[string]string{"Retry-After": "1"},
			outcome: OutcomeSaturated, labels: [3]string{"ns", "echo", "run"},
		},
		{
			name: "call timeout", method: "POST", path: "/v1/namespaces/ns/wasmplugins/echo/call/run",
			invoke:     func(context.Context, string, []byte) ([]byte, error) { return nil, ErrTimeout },
			wantStatus: 504, wantBody: "call timed out", outcome: OutcomeTimeout, labels: [3]string{"ns", "echo", "run"},
		},
		{
			name: "deadline exceeded is a timeout", method: "POST", path: "/v1/namespaces/ns/wasmplugins/echo/call/run",
			invoke: func(context.Context, string, []byte) ([]byte, error) {
				return nil, fmt.Errorf("module closed with %w", context.DeadlineExceeded)
			},
			wantStatus: 504, outcome: OutcomeTimeout, labels: [3]string{"ns", "echo", "run"},
		},
		{
			name: "plugin error gives its text and code", method: "POST", path: "/v1/namespaces/ns/wasmplugins/echo/call/run",
			invoke: func(context.Context, string, []byte) ([]byte, error) {
				return nil, &PluginError{Message: "bad input: want JSON", Code: 3}
			},
			wantStatus: 502, wantBody: "bad input: want JSON", wantExact: true,
			wantHeader: map[string]string{"X-Plugin-Return-Code": "3"},
			outcome:    OutcomePluginError, labels: [3]string{"ns", "echo", "run"},
		},
		{
			name: "plugin error without text", method: "POST", path: "/v1/namespaces/ns/wasmplugins/echo/call/run",
			invoke: func(context.Context, string, []byte) ([]byte, error) {
				return nil, fmt.Errorf("call: %w", &PluginError{Code: 1})
			},
			wantStatus: 502, wantBody: "plugin failed with return code 1", wantExact: true,
			outcome: OutcomePluginError, labels: [3]string{"ns", "echo", "run"},
		},
		{
			name: "any other error is 500 and hides its text", method: "POST", path: "/v1/namespaces/ns/wasmplugins/echo/call/run",
			header:     map[string]string{"X-Request-Id": "req-1"},
			invoke:     func(context.Context, string, []byte) ([]byte, error) { return nil, errors.New("secret internals") },
			wantStatus: 500, wantBody: "internal error (request id req-1)\n", wantExact: true,
			outcome: OutcomeError, labels: [3]string{"ns", "echo", "run"},
		},
		{
			name: "GET is not allowed", method: "GET", path: "/v1/namespaces/ns/wasmplugins/echo/call/run",
			wantStatus: 405, wantHeader: map[string]string{"Allow": "POST"},
		},
		{
			name: "PUT is not allowed", method: "PUT", path: "/v1/namespaces/ns/wasmplugins/echo/call/run",
			wantStatus: 405, wantHeader: map[string]string{"Allow": "POST"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inv := &fakeInvoker{limits: map[string]int64{"ns/echo": 0, "ns/small": 10}, invoke: tt.invoke}
			s, _ := newTestServer(t, inv, nil)
			req := httptest.NewRequest(tt.method, tt.path, strings.NewReader(tt.body))
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			rec := httptest.NewRecorder()
			s.Handler().ServeHTTP(rec, req)

			if rec.Code != tt.wantStatus {
				t.Fatalf("status = %d, want %d; body %q", rec.Code, tt.wantStatus, rec.Body.String())
			}
			if tt.wantExact && rec.Body.String() != tt.wantBody {
				t.Errorf("body = %q, want %q", rec.Body.String(), tt.wantBody)
			}
			if !tt.wantExact && !strings.Contains(rec.Body.String(), tt.wantBody) {
				t.Errorf("body = %q, want it to contain %q", rec.Body.String(), tt.wantBody)
			}
			for k, v := range tt.wantHeader {
				if got := rec.Header().Get(k); got != v {
					t.Errorf("header %s = %q, want %q", k, got, v)
				}
			}
			if rec.Header().Get("X-Request-Id") == "" {
				t.Error("no X-Request-Id in the answer")
			}
			if tt.outcome == "" {
				if n := testutil.CollectAndCount(s.Metrics().Calls); n != 0 {
					t.Errorf("%d call series counted, want none", n)
				}
				return
			}
			l := tt.labels
			if got := testutil.ToFloat64(s.Metrics().Calls.WithLabelValues(l[0], l[1], l[2], tt.outcome)); got != 1 {
				t.Errorf("calls_total{%v, outcome=%s} = %v, want 1", l, tt.outcome, got)
			}
			if n := testutil.CollectAndCount(s.Metrics().Calls); n != 1 {
				t.Errorf("%d call series, want 1", n)
			}
		})
	}
}

func TestTooLargeContentLengthIsRefusedUnread(t *testing.T) {
	inv := &fakeInvoker{limits: map[string]int64{"ns/small": 10}}
	s, _ := newTestServer(t, inv, nil)
	body := &countingReader{r: strings.NewReader(strings.Repeat("x", 1000))}
	req := httptest.NewRequest("POST", "/v1/namespaces/ns/wasmplugins/small/call/run", body)
	req.ContentLength = 1000
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("status = %d, want 413", rec.Code)
	}
	if body.n != 0 || inv.calls != 0 {
		t.Errorf("read %d bytes and made %d calls for a body announced over the cap, want none", body.n, inv.calls)
	}
}

func TestTooLargeChunkedIsRefusedAfterCapPlusOne(t *testing.T) {
	inv := &fakeInvoker{limits: map[string]int64{"ns/small": 10}}
	s, _ := newTestServer(t, inv, nil)
	body := &countingReader{r: strings.NewReader(strings.Repeat("x", 1<<20))}
	req := httptest.NewRequest("POST", "/v1/namespaces/ns/wasmplugins/small/call/run", body)
	req.ContentLength = -1 // chunked: the size is unknown until read
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("status = %d, want 413", rec.Code)
	}
	if body.n > 11 || inv.calls != 0 {
		t.Errorf("read %d bytes (want at most cap+1 = 11) and made %d calls", body.n, inv.calls)
	}
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func TestCallerGoneIsCanceledNotError(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	inv := &fakeInvoker{limits: map[string]int64{"ns/echo": 0}, invoke: func(ctx context.Context, _ string, _ []byte) ([]byte, error) {
		cancel()
		<-ctx.Done()
		return nil, fmt.Errorf("module closed with %w", ctx.Err())
	}}
	s, _ := newTestServer(t, inv, nil)
	req := httptest.NewRequestWithContext(ctx, "POST", "/v1/namespaces/ns/wasmplugins/echo/call/run", nil)
	s.Handler().ServeHTTP(httptest.NewRecorder(), req)
	if got := testutil.ToFloat64(s.Metrics().Calls.WithLabelValues("ns", "echo", "run", OutcomeCanceled)); got != 1 {
		t.Errorf("canceled calls = %v, want 1", got)
	}
}

func TestRequestID(t *testing.T) {
	long := strings.Repeat("a", 200)
	tests := []struct {
		name, given, want string // want "" means a generated id
	}{
		{"kept", "abc-123_x.y:z/1", "abc-123_x.y:z/1"},
		{"cleaned of unsafe bytes", "ab c\r\n<script>", "abcscript"},
		{"bounded", long, long[:maxRequestIDLen]},
		{"nothing usable", "\r\n \t", ""},
		{"absent", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logged []string
			log := funcr.New(func(prefix, args string) { logged = append(logged, args) }, funcr.Options{Verbosity: 1})
			inv := &fakeInvoker{limits: map[string]int64{"ns/echo": 0}}
			s, _ := newTestServer(t, inv, func(o *Options) { o.Logger = log })
			req := httptest.NewRequest("POST", "/v1/namespaces/ns/wasmplugins/echo/call/run", strings.NewReader("secret-input"))
			if tt.given != "" {
				req.Header.Set("X-Request-Id", tt.given)
			}
			rec := httptest.NewRecorder()
			s.Handler().ServeHTTP(rec, req)
			got := rec.Header().Get("X-Request-Id")
			if tt.want != "" && got != tt.want {
				t.Errorf("X-Request-Id = %q, want %q", got, tt.want)
			}
			if tt.want == "" && (got == "" || !strings.HasPrefix(got, idPrefix)) {
				t.Errorf("X-Request-Id = %q, want a generated id", got)
			}
			if ctxID := RequestID(inv.lastCtx); ctxID != got {
				t.Errorf("RequestID(ctx) = %q, want the header's %q", ctxID, got)
			}
			if l, err := logr.FromContext(inv.lastCtx); err != nil || l.GetSink() == nil {
				t.Errorf("the invoker's context has no logger: %v", err)
			}
			all := strings.Join(logged, "\n")
			if !strings.Contains(all, `"requestID"=`) || !strings.Contains(all, got) {
				t.Errorf("log %q does not name the request id %q", all, got)
			}
			if strings.Contains(all, "secret-input") {
				t.Errorf("log %q holds the call's input", all)
			}
		})
	}
	if a, b := requestID(""), requestID(""); a == b {
		t.Errorf("two generated ids are equal: %q", a)
	}
}

func TestHealthAndReady(t *testing.T) {
	var readyErr error = errors.New("no plugin loaded yet")
	s, _ := newTestServer(t, &fakeInvoker{}, func(o *Options) { o.Ready = func() error { return readyErr } })
	get := func(path string) (int, string) {
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		return rec.Code, rec.Body.String()
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Errorf("/healthz = %d, want 200", code)
	}
	if code, body := get("/readyz"); code != 503 || !strings.Contains(body, "no plugin loaded yet") {
		t.Errorf("/readyz = %d %q, want 503 with the reason", code, body)
	}
	readyErr = nil
	if code, _ := get("/readyz"); code != 200 {
		t.Errorf("/readyz = %d once ready, want 200", code)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Errorf("/healthz = %d, want 200", code)
	}
}
