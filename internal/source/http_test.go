package source

import (
	"context"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// module is the smallest valid WebAssembly module.
var module = []byte("\x00asm\x01\x00\x00\x00")

func fast(o HTTPOptions) HTTPOptions {
	if o.Backoff == 0 {
		o.Backoff = time.Millisecond
	}
	return o
}

func TestHTTP(t *testing.T) {
	big := append(append([]byte{}, module...), make([]byte, 1000)...)
	tests := []struct {
		name     string
		handler  func(n int32, w http.ResponseWriter, r *http.Request)
		opts     HTTPOptions
		wantReqs int32
		wantKind error // nil with wantErr: an error of no kind
		wantErr  string
		trans    bool
	}{
		{name: "plain", wantReqs: 1, handler: func(_ int32, w http.ResponseWriter, _ *http.Request) { w.Write(module) }},
		{name: "headers and bearer token sent", wantReqs: 1,
			opts: HTTPOptions{Headers: map[string]string{"X-Api-Key": "k1", "Host": "modules.example"}, BearerToken: "tok"},
			handler: func(_ int32, w http.ResponseWriter, r *http.Request) {
				if r.Header.Get("X-Api-Key") != "k1" || r.Header.Get("Authorization") != "Bearer tok" || r.Host != "modules.example" {
					w.WriteHeader(http.StatusUnauthorized)
					return
				}
				w.Write(module)
			}},
		{name: "500 then 200 is retried", wantReqs: 3, handler: func(n int32, w http.ResponseWriter, _ *http.Request) {
			if n < 3 {
				w.WriteHeader(http.StatusInternalServerError)
				return
			}
			w.Write(module)
		}},
		{name: "503 forever gives up after retries", opts: HTTPOptions{Retries: 2}, wantReqs: 3, trans: true,
			wantErr: "503 Service Unavailable; will retry (gave up after 3 attempts)",
			handler: func(_ int32, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) }},
		{name: "404 not retried", wantReqs: 1, wantKind: ErrNotFound, wantErr: "404 Not Found; check spec.source.http.url",
			handler: func(_ int32, w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) }},
		{name: "410 is not found", wantReqs: 1, wantKind: ErrNotFound, wantErr: "410 Gone",
			handler: func(_ int32, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusGone) }},
		{name: "401 unauthorized", wantReqs: 1, wantKind: ErrUnauthorized, wantErr: "check the bearer token",
			handler: func(_ int32, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusUnauthorized) }},
		{name: "403 unauthorized", wantReqs: 1, wantKind: ErrUnauthorized, wantErr: "403 Forbidden",
			handler: func(_ int32, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusForbidden) }},
		{name: "429 transient but left to the caller", wantReqs: 1, trans: true, wantErr: "429 Too Many Requests; will retry later",
			handler: func(_ int32, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTooManyRequests) }},
		{name: "400 permanent", wantReqs: 1, wantErr: "400 Bad Request",
			handler: func(_ int32, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusBadRequest) }},
		{name: "too large by Content-Length", opts: HTTPOptions{MaxBytes: 100}, wantReqs: 1, wantKind: ErrTooLarge,
			wantErr: "the server announces 1008 bytes, more than the 100 byte limit",
			handler: func(_ int32, w http.ResponseWriter, _ *http.Request) { w.Write(big) }},
		{name: "too large while reading", opts: HTTPOptions{MaxBytes: 100}, wantReqs: 1, wantKind: ErrTooLarge,
			wantErr: "the module is larger than the 100 byte limit",
			handler: func(_ int32, w http.ResponseWriter, _ *http.Request) {
				for i := 0; i < 10; i++ {
					w.Write(big[:100])
					w.(http.Flusher).Flush() // chunked: no Content-Length
				}
			}},
		{name: "exactly the cap is fine", opts: HTTPOptions{MaxBytes: int64(len(big))}, wantReqs: 1,
			handler: func(_ int32, w http.ResponseWriter, _ *http.Request) { w.Write(big) }},
		{name: "html is not wasm", wantReqs: 1, wantKind: ErrNotWasm, wantErr: `starts with 0x3c68746d,`,
			handler: func(_ int32, w http.ResponseWriter, _ *http.Request) { w.Write([]byte("<html><body>hi</body></html>")) }},
		{name: "empty body is not wasm", wantReqs: 1, wantKind: ErrNotWasm, wantErr: "content is empty",
			handler: func(_ int32, w http.ResponseWriter, _ *http.Request) {}},
		{name: "redirect followed", wantReqs: 2, handler: func(n int32, w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/moved.wasm" {
				http.Redirect(w, r, "/moved.wasm", http.StatusFound)
				return
			}
			w.Write(module)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var reqs atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				tc.handler(reqs.Add(1), w, r)
			}))
			defer srv.Close()
			var f Fetcher
			a, err := f.HTTP(context.Background(), srv.URL+"/plugin.wasm", fast(tc.opts))
			if got := reqs.Load(); got != tc.wantReqs {
				t.Errorf("server saw %d requests, want %d", got, tc.wantReqs)
			}
			if tc.wantErr == "" && tc.wantKind == nil {
				if err != nil {
					t.Fatal(err)
				}
				if a.Source != srv.URL+"/plugin.wasm" || !strings.HasPrefix(a.Digest, "sha256:") || len(a.Data) == 0 {
					t.Fatalf("artifact = %+v", a)
				}
				return
			}
			checkErr(t, err, tc.wantKind, tc.wantErr, tc.trans)
		})
	}
}

func checkErr(t *testing.T, err, kind error, msg string, transient bool) {
	t.Helper()
	if err == nil {
		t.Fatal("no error")
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v is not an *Error", err)
	}
	if kind != nil && !errors.Is(err, kind) {
		t.Errorf("error %q is not %v", err, kind)
	}
	if kind == nil && e.Kind != nil {
		t.Errorf("error %q has kind %v, want none", err, e.Kind)
	}
	if !strings.Contains(err.Error(), msg) {
		t.Errorf("error %q does not say %q", err, msg)
	}
	if IsTransient(err) != transient {
		t.Errorf("IsTransient(%q) = %v, want %v", err, !transient, transient)
	}
	if !strings.HasPrefix(err.Error(), "fetch module from ") {
		t.Errorf("error %q lacks the fetch prefix", err)
	}
}

func TestHTTPBadInput(t *testing.T) {
	tests := []struct {
		name, url string
		opts      HTTPOptions
		want      string
	}{
		{"scheme", "ftp://example.com/a.wasm", HTTPOptions{}, `URL scheme "ftp" is not supported`},
		{"no host", "https:///a.wasm", HTTPOptions{}, "URL has no host"},
		{"unparsable", "http://[::1", HTTPOptions{}, "not a valid URL"},
		{"header name", "https://example.com/a.wasm", HTTPOptions{Headers: map[string]string{"Bad Header": "x"}}, `header name "Bad Header" is not valid`},
		{"header value", "https://example.com/a.wasm", HTTPOptions{Headers: map[string]string{"X-A": "a\r\nB: c"}}, `value of header "X-A" contains a line break`},
		{"bearer and authorization", "https://example.com/a.wasm", HTTPOptions{BearerToken: "t", Headers: map[string]string{"authorization": "Basic x"}}, "keep one of them"},
		{"bearer with newline", "https://example.com/a.wasm", HTTPOptions{BearerToken: "t\n"}, "remove the trailing newline"},
		{"ca not pem", "https://example.com/a.wasm", HTTPOptions{CAPEM: []byte("not a cert")}, "the CA certificate given is not PEM"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var f Fetcher
			_, err := f.HTTP(context.Background(), tc.url, tc.opts)
			checkErr(t, err, ErrInvalid, tc.want, false)
		})
	}
}

func TestHTTPRedactsPassword(t *testing.T) {
	var f Fetcher
	_, err := f.HTTP(context.Background(), "ftp://user:secret@example.com/a.wasm", HTTPOptions{})
	if err == nil || strings.Contains(err.Error(), "secret") {
		t.Fatalf("error %v shows the password", err)
	}
}

func TestHTTPCustomCA(t *testing.T) {
	var reqs atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		reqs.Add(1)
		w.Write(module)
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes are expected
	srv.StartTLS()
	defer srv.Close()
	var f Fetcher
	_, err := f.HTTP(context.Background(), srv.URL+"/m.wasm", fast(HTTPOptions{}))
	checkErr(t, err, nil, "TLS certificate is not trusted; put the CA", false)

	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	a, err := f.HTTP(context.Background(), srv.URL+"/m.wasm", HTTPOptions{CAPEM: ca})
	if err != nil {
		t.Fatal(err)
	}
	if string(a.Data) != string(module) {
		t.Fatalf("data = %q", a.Data)
	}
	if n := reqs.Load(); n != 1 {
		t.Fatalf("server answered %d requests, want 1 (an untrusted certificate is not retried)", n)
	}

	_, err = f.HTTP(context.Background(), strings.Replace(srv.URL, "https", "http", 1)+"/m.wasm", fast(HTTPOptions{Retries: -1}))
	if err == nil {
		t.Fatal("plain http to a TLS port worked")
	}
}

func TestHTTPTimeouts(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	stall := func(partial bool) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if partial {
				w.Header().Set("Content-Length", "100")
				w.Write(module)
				w.(http.Flusher).Flush()
			}
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
	}
	headers := httptest.NewServer(stall(false))
	defer headers.Close()
	body := httptest.NewServer(stall(true))
	defer body.Close()
	// A TCP listener that never answers the TLS handshake.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { <-release; c.Close() }()
		}
	}()

	tests := []struct{ name, url string }{
		{"no response headers", headers.URL + "/m.wasm"},
		{"body stalls", body.URL + "/m.wasm"},
		{"tls handshake never answered", "https://" + ln.Addr().String() + "/m.wasm"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var f Fetcher
			start := time.Now()
			_, err := f.HTTP(context.Background(), tc.url, HTTPOptions{ConnectTimeout: 100 * time.Millisecond, ReadTimeout: 100 * time.Millisecond, Retries: -1})
			checkErr(t, err, nil, "timed out (connect timeout 100ms, read timeout 100ms)", true)
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("took %s", d)
			}
		})
	}
}

func TestHTTPCancelStopsRetrying(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var reqs atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		reqs.Add(1)
		cancel()
		w.WriteHeader(http.StatusBadGateway)
	}))
	defer srv.Close()
	var f Fetcher
	_, err := f.HTTP(ctx, srv.URL, HTTPOptions{Retries: 5, Backoff: time.Hour})
	checkErr(t, err, nil, "", true) // the 502 or the cancel, whichever the client saw first
	if reqs.Load() != 1 {
		t.Fatalf("%d requests after cancel", reqs.Load())
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	if m2, err := NewMetrics(reg); err != nil || m2.bytes != m.bytes {
		t.Fatalf("registering twice: %v", err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		w.Write(module)
	}))
	defer srv.Close()
	f := Fetcher{Metrics: m}
	for _, p := range []string{"/a", "/b", "/missing"} {
		f.HTTP(context.Background(), srv.URL+p, HTTPOptions{})
	}
	f.ConfigMap("ns/cm", map[string][]byte{"k": module}, nil, "k")
	f.ConfigMap("ns/cm", nil, nil, "k")
	if got := testutil.ToFloat64(m.bytes.WithLabelValues("http")); got != float64(2*len(module)) {
		t.Errorf("http bytes = %v", got)
	}
	if got := testutil.ToFloat64(m.bytes.WithLabelValues("configMap")); got != float64(len(module)) {
		t.Errorf("configMap bytes = %v", got)
	}
	if got := testutil.ToFloat64(m.failures.WithLabelValues("http", "not_found")); got != 1 {
		t.Errorf("http not_found failures = %v", got)
	}
	if got := testutil.ToFloat64(m.failures.WithLabelValues("configMap", "not_found")); got != 1 {
		t.Errorf("configMap not_found failures = %v", got)
	}
	if n := testutil.CollectAndCount(m.duration); n != 2 {
		t.Errorf("duration series = %d, want 2", n)
	}
}
