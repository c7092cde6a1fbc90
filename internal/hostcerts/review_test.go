package hostcerts

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	certv1 "k8s.io/api/certificates/v1"
	"k8s.io/utils/ptr"
)

var testPolicy = Policy{SignerName: "wasm-operator.dev/ns.host", Requester: "system:serviceaccount:ns:host",
	DNSNames: []string{"host.ns.svc", "host.ns"}, MaxDuration: 48 * time.Hour}

func requestPEM(t *testing.T, key any, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func TestReview(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	weak, _ := rsa.GenerateKey(rand.Reader, 1024)
	good := requestPEM(t, ec, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}, DNSNames: []string{"host.ns.svc"}})
	csr := func(change func(*certv1.CertificateSigningRequest)) *certv1.CertificateSigningRequest {
		c := &certv1.CertificateSigningRequest{Spec: certv1.CertificateSigningRequestSpec{
			SignerName: testPolicy.SignerName, Username: testPolicy.Requester, Request: good,
			Extra:  map[string]certv1.ExtraValue{NodeNameExtra: {"node-a"}},
			Usages: []certv1.KeyUsage{certv1.UsageDigitalSignature, certv1.UsageServerAuth}}}
		if change != nil {
			change(c)
		}
		return c
	}
	withRequest := func(key any, tmpl *x509.CertificateRequest) func(*certv1.CertificateSigningRequest) {
		b := requestPEM(t, key, tmpl)
		return func(c *certv1.CertificateSigningRequest) { c.Spec.Request = b }
	}
	for _, c := range []struct {
		name    string
		csr     *certv1.CertificateSigningRequest
		wantErr string
		want    time.Duration
	}{
		{"a host's request", csr(nil), "", 48 * time.Hour},
		{"shorter asked", csr(func(c *certv1.CertificateSigningRequest) { c.Spec.ExpirationSeconds = ptr.To(int32(3600)) }), "", time.Hour},
		{"longer asked", csr(func(c *certv1.CertificateSigningRequest) { c.Spec.ExpirationSeconds = ptr.To(int32(30 * 24 * 3600)) }), "", 48 * time.Hour},
		{"another signer", csr(func(c *certv1.CertificateSigningRequest) { c.Spec.SignerName = "kubernetes.io/kubelet-serving" }), "not \"wasm-operator.dev/ns.host\"", 0},
		{"another user", csr(func(c *certv1.CertificateSigningRequest) { c.Spec.Username = "system:serviceaccount:team:editor" }),
			`requested by "system:serviceaccount:team:editor": only the hosts' ServiceAccount`, 0},
		{"no node claim", csr(func(c *certv1.CertificateSigningRequest) { c.Spec.Extra = nil }), "names no node", 0},
		{"two node claims", csr(func(c *certv1.CertificateSigningRequest) { c.Spec.Extra[NodeNameExtra] = []string{"a", "b"} }), "names no node", 0},
		{"client auth", csr(func(c *certv1.CertificateSigningRequest) {
			c.Spec.Usages = append(c.Spec.Usages, certv1.UsageClientAuth)
		}),
			`usage "client auth" is not for a serving certificate`, 0},
		{"no server auth", csr(func(c *certv1.CertificateSigningRequest) {
			c.Spec.Usages = []certv1.KeyUsage{certv1.UsageDigitalSignature}
		}), "lack \"server auth\"", 0},
		{"a name of the API server", csr(withRequest(ec, &x509.CertificateRequest{DNSNames: []string{"host.ns.svc", "kubernetes.default.svc"}})),
			`the name "kubernetes.default.svc" is not the host Service's`, 0},
		{"an IP address", csr(withRequest(ec, &x509.CertificateRequest{DNSNames: []string{"host.ns.svc"}, IPAddresses: []net.IP{net.IPv4(10, 0, 0, 1)}})),
			"asks for IP addresses", 0},
		{"a URI", csr(withRequest(ec, &x509.CertificateRequest{DNSNames: []string{"host.ns.svc"}, URIs: []*url.URL{{Scheme: "spiffe", Host: "cluster.local"}}})),
			"asks for IP addresses, emails or URIs", 0},
		{"no name", csr(withRequest(ec, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "host.ns.svc"}})), "names no DNS name", 0},
		{"a weak key", csr(withRequest(weak, &x509.CertificateRequest{DNSNames: []string{"host.ns.svc"}})), "RSA key of 1024 bits", 0},
		{"not PEM", csr(func(c *certv1.CertificateSigningRequest) { c.Spec.Request = []byte("hello") }), "one PEM CERTIFICATE REQUEST block", 0},
		{"a broken signature", csr(func(c *certv1.CertificateSigningRequest) {
			b, _ := pem.Decode(good)
			der := append([]byte(nil), b.Bytes...)
			der[len(der)-3] ^= 0xff
			c.Spec.Request = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
		}), "signature", 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			g, err := Review(c.csr, testPolicy)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("Review: %v, want an error containing %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if g.Node != "node-a" || g.Duration != c.want || len(g.DNSNames) != 1 || g.DNSNames[0] != "host.ns.svc" {
				t.Fatalf("grant %+v, want node-a for %s, host.ns.svc", g, c.want)
			}
		})
	}
}
