package hostapi_test

import (
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wasm-operator/wasm-operator/internal/hostapi"
)

// upper serves one plugin, default/upper, whose functions upper-case their input.
type upper struct{}

func (upper) MaxInputBytes(namespace, name string) (int64, bool) {
	return 1 << 20, namespace == "default" && name == "upper"
}

func (upper) Invoke(ctx context.Context, namespace, name, function string, input []byte) ([]byte, error) {
	if function != "run" {
		return nil, hostapi.ErrNoFunction
	}
	if len(input) == 0 {
		return nil, &hostapi.PluginError{Message: "no input", Code: 1}
	}
	return []byte(strings.ToUpper(string(input))), nil
}

func Example() {
	s, err := hostapi.New(hostapi.Options{
		Addr:        "127.0.0.1:9443", // authentication may be off only on loopback
		DisableAuth: true,
		Invoker:     upper{},
		Registerer:  prometheus.NewRegistry(),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	// The host would call s.Run(ctx); here the handler answers directly.
	for _, c := range []struct{ path, body string }{
		{"/v1/namespaces/default/wasmplugins/upper/call/run", "hello"},
		{"/v1/namespaces/default/wasmplugins/upper/call/run", ""},
		{"/v1/namespaces/default/wasmplugins/lower/call/run", "hello"},
	} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("POST", c.path, strings.NewReader(c.body))
		req.Header.Set("X-Request-Id", "example-1")
		s.Handler().ServeHTTP(rec, req)
		out, _ := io.ReadAll(rec.Body)
		fmt.Printf("%d %s %q\n", rec.Code, rec.Header().Get("X-Request-Id"), strings.TrimSpace(string(out)))
	}
	// Output:
	// 200 example-1 "HELLO"
	// 502 example-1 "no input"
	// 404 example-1 "wasmplugin default/lower is not served on this node"
}
