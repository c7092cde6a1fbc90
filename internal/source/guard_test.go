package source

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"

	"github.com/wasm-operator/wasm-operator/internal/netguard/netguardtest"
)

// TestGuardReplaysTheIssue: whoever may create a WasmPlugin points its source at an internal endpoint
// (directly, by a name that resolves there, or by a redirect), hoping to read its answer from the
// status or to learn which ports are open. Every attempt is refused before a byte is sent, with a
// message that says which rule refused it, and no error carries what an endpoint answered.
func TestGuardReplaysTheIssue(t *testing.T) {
	secret := "token=s3cr3t-4f9a8b7c6d5e"
	internal := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, secret) }))
	t.Cleanup(internal.Close)
	iu, _ := url.Parse(internal.URL)
	closed := httptest.NewServer(http.NotFoundHandler())
	closedURL := closed.URL
	closed.Close() // a port nobody listens on

	// "public" stands for a server on the internet that redirects to internal addresses.
	public, pubAddr := netguardtest.Redirector(t, map[string]string{
		"/to-loopback":       internal.URL + "/",
		"/to-metadata":       "http://169.254.169.254/latest/meta-data/",
		"/to-private":        "http://10.0.0.1/m.wasm",
		"/to-rebinding-name": "http://rebind.example.net:" + iu.Port() + "/",
		"/to-other-host":     "http://elsewhere.example.com/m.wasm",
	}, "\x00asm\x01\x00\x00\x00")
	resolver, _ := netguardtest.DNS(t, [4]byte{127, 0, 0, 1})
	guard := func(g Guard) *Guard {
		g.exempt = func(ap netip.AddrPort) bool { return ap == pubAddr }
		g.resolver = resolver
		return &g
	}
	const local = "loopback, link-local or unspecified address, which the controller never fetches from"
	const private = "private address, and the controller runs with --source-deny-private-networks"
	cases := []struct {
		name, url string
		guard     *Guard
		want      string
	}{
		{"loopback", internal.URL + "/", guard(Guard{}), local},
		{"closed loopback port", closedURL + "/", guard(Guard{}), local},
		{"ipv6 loopback", "http://[::1]:" + iu.Port() + "/", guard(Guard{}), local},
		{"loopback embedded in ipv6", "http://[::ffff:0:7f00:1]:" + iu.Port() + "/", guard(Guard{}), local},
		{"metadata", "http://169.254.169.254/latest/meta-data/", guard(Guard{}), local},
		{"name resolving to loopback", "http://rebind.example.net:" + iu.Port() + "/", guard(Guard{}), local},
		{"redirect to loopback", public.URL + "/to-loopback", guard(Guard{}), local},
		{"redirect to metadata", public.URL + "/to-metadata", guard(Guard{}), local},
		{"redirect to rebinding name", public.URL + "/to-rebinding-name", guard(Guard{}), local},
		{"private literal", "http://10.0.0.1/m.wasm", guard(Guard{DenyPrivateNetworks: true}), private},
		{"redirect to private", public.URL + "/to-private", guard(Guard{DenyPrivateNetworks: true}), private},
		{"host not allowed", "http://elsewhere.example.com/m.wasm", guard(Guard{AllowedHosts: []string{"127.0.0.1"}}),
			"host elsewhere.example.com is not in the controller's --allowed-source-hosts"},
		{"redirect to a host not allowed", public.URL + "/to-other-host", guard(Guard{AllowedHosts: []string{"127.0.0.1"}}),
			"host elsewhere.example.com is not in the controller's --allowed-source-hosts"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := Fetcher{Guard: tc.guard}
			_, err := f.HTTP(context.Background(), tc.url, HTTPOptions{Retries: -1})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if !errors.Is(err, ErrInvalid) || IsTransient(err) {
				t.Fatalf("a refused source must stall, not retry: %v", err)
			}
			for _, leak := range []string{"s3cr3t", "connection refused", iu.Port() + ": connect"} {
				if strings.Contains(err.Error(), leak) {
					t.Fatalf("error %q shows %q", err, leak)
				}
			}
		})
	}

	t.Run("public module passes", func(t *testing.T) {
		f := Fetcher{Guard: guard(Guard{DenyPrivateNetworks: true, AllowedHosts: []string{"127.0.0.1"}})}
		if _, err := f.HTTP(context.Background(), public.URL+"/m.wasm", HTTPOptions{Retries: -1}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("allowed endpoint answers a secret", func(t *testing.T) {
		f := Fetcher{Guard: &Guard{AllowLoopback: true}}
		_, err := f.HTTP(context.Background(), internal.URL+"/", HTTPOptions{Retries: -1})
		if !errors.Is(err, ErrNotWasm) || !strings.Contains(err.Error(), "starts with 0x746f6b65,") || strings.Contains(err.Error(), "s3cr3t") {
			t.Fatalf("err = %v, want at most 4 bytes as hex", err)
		}
	})
}

// TestGuardOCI: an OCI source on loopback is refused like an HTTP one.
func TestGuardOCI(t *testing.T) {
	reg := newRegistry(t, "", "")
	reg.push(t, "plugins/p:v1", wasmArtifact(t, module, MediaTypeWasmLayer))
	image := reg.host() + "/plugins/p:v1"
	_, err := (&Fetcher{Guard: &Guard{}}).OCI(context.Background(), image, OCIOptions{Retries: -1})
	if err == nil || !strings.Contains(err.Error(), "never fetches from") || IsTransient(err) {
		t.Fatalf("err = %v", err)
	}
	if _, err := (&Fetcher{Guard: &Guard{AllowLoopback: true}}).OCI(context.Background(), image, OCIOptions{Retries: -1}); err != nil {
		t.Fatalf("allowed loopback: %v", err)
	}
}
