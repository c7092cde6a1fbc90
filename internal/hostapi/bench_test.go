package hostapi

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"testing"
	"time"
)

// echoInvoker is the trivial Invoker of the benchmarks: it returns its input.
type echoInvoker struct{}

func (echoInvoker) MaxInputBytes(string, string) (int64, bool) { return 0, true }
func (echoInvoker) Invoke(_ context.Context, _, _, _ string, in []byte) ([]byte, error) {
	return in, nil
}

// bareEcho is the peer: a plain net/http handler doing the same work without the API.
func bareEcho(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	_, _ = w.Write(b)
}

// BenchmarkCall measures a call of a trivial plugin through the HTTP API beside a bare net/http
// handler, over keep-alive connections, at concurrency 1 and 64.
func BenchmarkCall(b *testing.B) {
	f := &fakeReviews{}
	handlers := []struct {
		name string
		h    func(b *testing.B) http.Handler
	}{
		{"bare", func(*testing.B) http.Handler { return http.HandlerFunc(bareEcho) }},
		{"hostapi", func(b *testing.B) http.Handler {
			s, _ := newTestServer(b, echoInvoker{}, nil)
			return s.Handler()
		}},
		{"hostapi-auth", func(b *testing.B) http.Handler { // every review answered from the cache
			s, _ := newTestServer(b, echoInvoker{}, func(o *Options) {
				o.DisableAuth, o.Kube, o.AuthCacheTTL = false, f.client(), time.Hour
			})
			return s.Handler()
		}},
	}
	input := bytes.Repeat([]byte("x"), 64)
	for _, conc := range []int{1, 64} {
		for _, hh := range handlers {
			b.Run(hh.name+"/c"+strconv.Itoa(conc), func(b *testing.B) {
				srv := httptest.NewServer(hh.h(b))
				defer srv.Close()
				client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conc, MaxConnsPerHost: conc}}
				defer client.CloseIdleConnections()
				url := srv.URL + "/v1/namespaces/allowed/wasmplugins/p/call/run"
				do := func(b *testing.B) {
					req, _ := http.NewRequest("POST", url, bytes.NewReader(input))
					req.Header.Set("Authorization", "Bearer "+jwtLike("good"))
					resp, err := client.Do(req)
					if err != nil {
						b.Fatal(err)
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						b.Fatalf("status %d", resp.StatusCode)
					}
				}
				b.ReportAllocs()
				start := time.Now()
				if conc == 1 {
					for b.Loop() {
						do(b)
					}
				} else {
					b.SetParallelism((conc + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							do(b)
						}
					})
				}
				b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "calls/s")
			})
		}
	}
}

// BenchmarkHandler measures the handler alone, without sockets: the API's own cost per call
// beside the bare handler's.
func BenchmarkHandler(b *testing.B) {
	s, _ := newTestServer(b, echoInvoker{}, nil)
	input := bytes.Repeat([]byte("x"), 64)
	for _, hh := range []struct {
		name string
		h    http.Handler
	}{{"bare", http.HandlerFunc(bareEcho)}, {"hostapi", s.Handler()}} {
		b.Run(hh.name, func(b *testing.B) {
			b.ReportAllocs()
			body := bytes.NewReader(input)
			req := httptest.NewRequest("POST", "/v1/namespaces/allowed/wasmplugins/p/call/run", body)
			w := &benchWriter{h: http.Header{}}
			for b.Loop() {
				body.Reset(input)
				req.Body = io.NopCloser(body)
				clear(w.h)
				hh.h.ServeHTTP(w, req)
			}
		})
	}
}

type benchWriter struct{ h http.Header }

func (w *benchWriter) Header() http.Header         { return w.h }
func (w *benchWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *benchWriter) WriteHeader(int)             {}
