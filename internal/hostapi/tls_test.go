package hostapi

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wasm-operator/wasm-operator/internal/certs"
)

// TestServeTLSHotReload: the server serves the certificate in its files over real TLS, a client
// trusting the CA connects, and a rotated certificate is served to new connections without a
// restart; a broken rotation keeps the last good certificate.
func TestServeTLSHotReload(t *testing.T) {
	ca, err := certs.NewCA("test-ca")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	write := func(cn string) {
		t.Helper()
		c, k, err := ca.Issue(cn, []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		// As a Secret volume does: new files renamed into place.
		for f, b := range map[string][]byte{certFile: c, keyFile: k} {
			if err := os.WriteFile(f+".new", b, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(f+".new", f); err != nil {
				t.Fatal(err)
			}
		}
	}
	write("host-1")
	r, err := NewCertReloader(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Now()
	r.now = func() time.Time { return clock }

	inv := &fakeInvoker{limits: map[string]int64{"ns/echo": 0}}
	s, _ := newTestServer(t, inv, func(o *Options) { o.TLSConfig = r.TLSConfig() })
	url := strings.Replace(newHTTPServer(t, s), "http://", "https://", 1)
	servedCN := func() string {
		t.Helper()
		// A new client each time: a new connection, a new handshake.
		client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}
		defer client.CloseIdleConnections()
		resp, err := client.Post(url+"/v1/namespaces/ns/wasmplugins/echo/call/run", "", strings.NewReader("over tls"))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(b) != "over tls" {
			t.Fatalf("call over TLS = %d %q", resp.StatusCode, b)
		}
		return resp.TLS.PeerCertificates[0].Subject.CommonName
	}
	if cn := servedCN(); cn != "host-1" {
		t.Fatalf("served %q, want host-1", cn)
	}
	write("host-2")
	clock = clock.Add(2 * time.Second)
	if cn := servedCN(); cn != "host-2" {
		t.Fatalf("after rotation served %q, want host-2", cn)
	}
	os.WriteFile(certFile, []byte("not a certificate"), 0o600)
	clock = clock.Add(2 * time.Second)
	if cn := servedCN(); cn != "host-2" || r.Err() == nil {
		t.Fatalf("after a broken rotation served %q (err %v), want host-2 kept and the error reported", cn, r.Err())
	}

	// A plain-HTTP client gets no answer it could send a token over.
	resp, err := http.Post(strings.Replace(url, "https://", "http://", 1)+"/healthz", "", nil)
	if err == nil && resp.StatusCode == 200 {
		t.Fatal("plain HTTP served on the TLS port")
	}
}
