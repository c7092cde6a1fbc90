package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"strings"
	"testing"
	"time"
)

func TestLoadCA(t *testing.T) {
	ca, err := NewCA("root")
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ca.KeyPEM()
	other, _ := NewCA("other")
	otherKey, _ := other.KeyPEM()
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	pkcs1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)})
	leaf, _, _ := ca.Issue("leaf", []string{"a"}, nil)
	for _, c := range []struct {
		name      string
		cert, key []byte
		want      string
	}{
		{"a root", ca.PEM, key, ""},
		{"a chain after the CA", append(append([]byte(nil), ca.PEM...), other.PEM...), key, ""},
		{"another key", ca.PEM, otherKey, "does not match"},
		{"an RSA key of another", ca.PEM, pkcs1, "does not match"},
		{"not a CA", leaf, key, "is not a CA"},
		{"not PEM", []byte("x"), key, "not PEM"},
		{"a broken key", ca.PEM, []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), "neither"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := LoadCA(c.cert, c.key)
			if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
				t.Fatalf("LoadCA: %v, want %q", err, c.want)
			}
		})
	}
}

// intermediate makes a CA signed by root, as cert-manager issues one from a CA issuer.
func intermediate(t *testing.T, root *CA) *CA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: "intermediate"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(24 * time.Hour), KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, root.cert, &key.PublicKey, root.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	ca, err := LoadCA(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// TestSignChains: a root's certificate goes alone; an intermediate's carries the intermediate, so a caller
// trusting only the root verifies it; the lifetime never passes the CA's.
func TestSignChains(t *testing.T) {
	root, _ := NewCA("root")
	inter := intermediate(t, root)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, c := range []struct {
		name  string
		ca    *CA
		certs int
	}{{"root", root, 1}, {"intermediate", inter, 2}} {
		t.Run(c.name, func(t *testing.T) {
			out, err := c.ca.Sign(&key.PublicKey, "host", []string{"h.ns.svc"}, time.Now().Add(100*24*time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			var chain []*x509.Certificate
			for rest := out; ; {
				var b *pem.Block
				if b, rest = pem.Decode(rest); b == nil {
					break
				}
				cert, err := x509.ParseCertificate(b.Bytes)
				if err != nil {
					t.Fatal(err)
				}
				chain = append(chain, cert)
			}
			if len(chain) != c.certs {
				t.Fatalf("%d certificates, want %d", len(chain), c.certs)
			}
			inters := x509.NewCertPool()
			for _, x := range chain[1:] {
				inters.AddCert(x)
			}
			if _, err := chain[0].Verify(x509.VerifyOptions{Roots: root.Pool(), Intermediates: inters, DNSName: "h.ns.svc"}); err != nil {
				t.Fatal(err)
			}
			if chain[0].NotAfter.After(c.ca.NotAfter()) {
				t.Fatalf("valid until %s, past its CA (%s)", chain[0].NotAfter, c.ca.NotAfter())
			}
		})
	}
}

func TestBundle(t *testing.T) {
	a, _ := NewCA("a")
	b, _ := NewCA("b")
	c, _ := NewCA("c")
	expired := intermediate(t, a) // valid a day
	now := time.Now()
	cat := func(xs ...[]byte) []byte {
		var out []byte
		for _, x := range xs {
			out = append(out, x...)
		}
		return out
	}
	for _, tc := range []struct {
		name      string
		cur, prev []byte
		at        time.Time
		keep      int
		want      []byte
	}{
		{"first", a.PEM, nil, now, 4, a.PEM},
		{"unchanged", a.PEM, a.PEM, now, 4, a.PEM},
		{"replaced: the old one stays", b.PEM, a.PEM, now, 4, cat(b.PEM, a.PEM)},
		{"replaced again", c.PEM, cat(b.PEM, a.PEM), now, 4, cat(c.PEM, b.PEM, a.PEM)},
		{"capped", c.PEM, cat(b.PEM, a.PEM), now, 2, cat(c.PEM, b.PEM)},
		{"expired ones dropped", b.PEM, cat(expired.PEM, a.PEM), now.Add(48 * time.Hour), 4, cat(b.PEM, a.PEM)},
		{"not PEM ignored", b.PEM, []byte("junk"), now, 4, b.PEM},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Bundle(tc.cur, tc.prev, tc.at, tc.keep); string(got) != string(tc.want) {
				t.Fatalf("got %d bytes, want %d", len(got), len(tc.want))
			}
		})
	}
}
