package controllers

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/wasm-operator/wasm-operator/internal/certs"
)

// TestDynamicRoots: the controller's client for hosts trusts the bundle its signer holds at each
// connection: none yet refuses, a CA added later is trusted without a new client, and the name is checked.
func TestDynamicRoots(t *testing.T) {
	ca, err := certs.NewCA("hosts")
	if err != nil {
		t.Fatal(err)
	}
	crt, key, err := ca.Issue("host", []string{"host.ns.svc"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(crt, key)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	srv.StartTLS()
	defer srv.Close()
	var pool atomic.Pointer[x509.CertPool]
	get := func(name string) error {
		tr := &http.Transport{TLSClientConfig: dynamicRoots(pool.Load, name)}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr}).Get(srv.URL)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	if err := get("host.ns.svc"); err == nil {
		t.Fatal("trusted a host before any bundle")
	}
	other, _ := certs.NewCA("other")
	pool.Store(other.Pool())
	if err := get("host.ns.svc"); err == nil {
		t.Fatal("trusted a host of another CA")
	}
	pool.Store(ca.Pool())
	if err := get("host.ns.svc"); err != nil {
		t.Fatalf("the hosts' CA, added later: %v", err)
	}
	if err := get("kubernetes.default.svc"); err == nil {
		t.Fatal("trusted a certificate for another name")
	}
}
