package source_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wasm-operator/wasm-operator/internal/source"
)

func Example() {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("\x00asm\x01\x00\x00\x00"))
	}))
	defer srv.Close()

	metrics, _ := source.NewMetrics(prometheus.NewRegistry())
	f := source.Fetcher{Metrics: metrics}
	a, err := f.HTTP(context.Background(), srv.URL+"/plugin.wasm", source.HTTPOptions{BearerToken: "token"})
	if err != nil {
		switch {
		case source.IsTransient(err):
			// requeue with backoff; keep serving the last good module
		case errors.Is(err, source.ErrNotFound):
			// Stalled, reason SourceNotFound, message err.Error()
		}
		return
	}
	pin := "sha256:93a44bbb96c751218e4c00d479e4c14358122a389acca16205b1e4d0dc5f9476"
	fmt.Println(len(a.Data), a.Digest == pin, source.CheckDigest(pin, a.Digest))
	// Output: 8 true <nil>
}
