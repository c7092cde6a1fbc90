package host

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	wasmv1 "github.com/wasm-operator/wasm-operator/api/v1alpha1"
	"github.com/wasm-operator/wasm-operator/internal/hostapi"
)

// servePlugins loads the named example plugins into a Plugins table and serves it with the call API on
// loopback, without authentication, as `make dev` does. It returns the base URL.
func servePlugins(tb *testing.B, pool *wasmv1.PoolSpec, names ...string) (*Plugins, string) {
	tb.Helper()
	t := newTable(tb, names...)
	for _, name := range names {
		t.ensure(tb, newObj(name, t.digests[name], wasmv1.WasmPluginSpec{Pool: pool,
			Permissions: &wasmv1.Permissions{Vars: &wasmv1.VarsPermission{}}}))
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv, err := hostapi.New(hostapi.Options{Invoker: t.Plugins, DisableAuth: true, Metrics: t.Metrics, Addr: ln.Addr().String()})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = srv.Serve(ctx, ln); close(done) }()
	tb.Cleanup(func() { cancel(); <-done })
	return t.Plugins, "http://" + ln.Addr().String()
}

// serveBare serves a net/http handler that reads the body and writes a fixed answer: the HTTP ceiling.
func serveBare(tb testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = w.Write([]byte(`{"count":3,"total":3,"vowels":"aeiouAEIOU"}`))
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	tb.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String()
}

// BenchmarkCallAPI measures calls through the host's HTTP API (count_vowels, a small plugin, from a pool of
// 64) beside a bare net/http handler in the same run, at 1 and 64 concurrent clients, with p50 and p99.
func BenchmarkCallAPI(b *testing.B) {
	_, api := servePlugins(b, &wasmv1.PoolSpec{MaxConcurrency: ptr32(64), MaxIdle: ptr32(64)}, "count-vowels")
	bare := serveBare(b)
	targets := []struct{ name, url string }{
		{"bare", bare + "/"},
		{"host", api + "/v1/namespaces/default/wasmplugins/count-vowels/call/count_vowels"},
	}
	for _, conc := range []int{1, 64} {
		for _, tg := range targets {
			b.Run(fmt.Sprintf("%s/c%d", tg.name, conc), func(b *testing.B) {
				client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conc, MaxConnsPerHost: conc}}
				var (
					mu   sync.Mutex
					lats []time.Duration
				)
				b.ReportAllocs()
				b.SetParallelism((conc + 1) / 2) // RunParallel runs parallelism x GOMAXPROCS(2) goroutines
				if conc == 1 {
					b.SetParallelism(1)
				}
				b.ResetTimer()
				start := time.Now()
				run := func(pb interface{ Next() bool }) {
					local := make([]time.Duration, 0, 1024)
					for pb.Next() {
						t0 := time.Now()
						resp, err := client.Post(tg.url, "application/octet-stream", strings.NewReader("Hello, World!"))
						if err != nil {
							b.Error(err)
							return
						}
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode != 200 {
							b.Errorf("status %d", resp.StatusCode)
							return
						}
						local = append(local, time.Since(t0))
					}
					mu.Lock()
					lats = append(lats, local...)
					mu.Unlock()
				}
				if conc == 1 {
					// One client: a plain loop, not RunParallel's GOMAXPROCS goroutines.
					run(&counter{n: b.N})
				} else {
					b.RunParallel(func(pb *testing.PB) { run(pb) })
				}
				elapsed := time.Since(start)
				b.StopTimer()
				slices.Sort(lats)
				if len(lats) > 0 {
					b.ReportMetric(float64(len(lats))/elapsed.Seconds(), "calls/s")
					b.ReportMetric(float64(lats[len(lats)/2].Microseconds()), "p50-µs")
					b.ReportMetric(float64(lats[len(lats)*99/100].Microseconds()), "p99-µs")
				}
			})
		}
	}
}

type counter struct{ n int }

func (c *counter) Next() bool { c.n--; return c.n >= 0 }

func ptr32(v int32) *int32 { return &v }
