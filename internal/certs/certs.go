// Package certs makes a small certificate authority and serving certificates signed by it: the
// controller's signer of the hosts' per-host serving certificates (internal/hostcerts) keeps its CA with
// it, and the development stack and the tests make theirs.
//
//	ca, _ := certs.NewCA("wasm-operator-host-ca")
//	certPEM, keyPEM, _ := ca.Issue("wasm-operator-host", []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)})
package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"
)

// CA is a certificate authority held in memory.
type CA struct {
	cert *x509.Certificate
	key  crypto.Signer
	// PEM is the CA certificate, what callers trust when the CA is a root; an intermediate CA (one
	// cert-manager issued) also sends it with each certificate it signs.
	PEM []byte
}

// NewCA makes a CA valid for ten years.
func NewCA(commonName string) (*CA, error) { return NewCAValidFor(commonName, 10*365*24*time.Hour) }

// NewCAValidFor makes a CA valid for d.
func NewCAValidFor(commonName string, d time.Duration) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("make CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(d),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("make CA certificate: %w", err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &CA{cert: cert, key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// Issue makes a serving certificate for the names and addresses, valid for a year, and returns it
// and its key in PEM.
func (ca *CA) Issue(commonName string, dnsNames []string, ips []net.IP) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("make key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: commonName},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(1, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     dnsNames,
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, nil, fmt.Errorf("sign certificate: %w", err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), nil
}

// LoadCA reads a CA from its PEM certificate (the first of certPEM: a cert-manager CA Secret's tls.crt
// may carry its chain after it) and private key (PKCS #8, SEC 1 or PKCS #1).
func LoadCA(certPEM, keyPEM []byte) (*CA, error) {
	b, _ := pem.Decode(certPEM)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, errors.New("the CA certificate is not PEM (want a CERTIFICATE block)")
	}
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse the CA certificate: %w", err)
	}
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("the certificate %q is not a CA (basic constraints CA and key usage cert sign are needed)", cert.Subject.CommonName)
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, err
	}
	if !publicKeysEqual(key.Public(), cert.PublicKey) {
		return nil, errors.New("the CA key does not match the CA certificate")
	}
	return &CA{cert: cert, key: key, PEM: pem.EncodeToMemory(b)}, nil
}

func parseKey(keyPEM []byte) (crypto.Signer, error) {
	b, _ := pem.Decode(keyPEM)
	if b == nil {
		return nil, errors.New("the CA key is not PEM")
	}
	if k, err := x509.ParsePKCS8PrivateKey(b.Bytes); err == nil {
		if s, ok := k.(crypto.Signer); ok {
			return s, nil
		}
		return nil, fmt.Errorf("the CA key is a %T, which cannot sign", k)
	}
	if k, err := x509.ParseECPrivateKey(b.Bytes); err == nil {
		return k, nil
	}
	if k, err := x509.ParsePKCS1PrivateKey(b.Bytes); err == nil {
		return k, nil
	}
	return nil, fmt.Errorf("the CA key (PEM %s) is neither PKCS #8, SEC 1 nor PKCS #1", b.Type)
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(b)
}

// KeyPEM is the CA's private key in PEM (PKCS #8), for the Secret that keeps it.
func (ca *CA) KeyPEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(ca.key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// Root reports whether the CA signed its own certificate: callers trust it directly. An intermediate
// CA's certificates are sent with it (Sign) and callers trust the root above it.
func (ca *CA) Root() bool {
	return ca.cert.CheckSignatureFrom(ca.cert) == nil
}

// NotAfter is when the CA certificate expires.
func (ca *CA) NotAfter() time.Time { return ca.cert.NotAfter }

// Sign makes a serving certificate (server auth only) for the public key of a certificate request, with
// commonName and dnsNames, valid from an hour ago (clock skew) until notAfter, cut to the CA's own
// expiry. It returns the certificate in PEM, followed by the CA's when the CA is an intermediate.
func (ca *CA) Sign(pub crypto.PublicKey, commonName string, dnsNames []string, notAfter time.Time) ([]byte, error) {
	if time.Now().Add(MinLeft).After(ca.cert.NotAfter) {
		return nil, fmt.Errorf("the CA %q expires at %s: renew or replace it before it signs again", ca.cert.Subject.CommonName, ca.cert.NotAfter.Format(time.RFC3339))
	}
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: commonName},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     dnsNames,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate: %w", err)
	}
	out := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if !ca.Root() {
		out = append(out, ca.PEM...)
	}
	return out, nil
}

// MinLeft is the least validity a CA must have left to sign: a certificate shorter than that would be
// renewed at once, again and again.
const MinLeft = 10 * time.Minute

// Bundle returns the PEM CA certificates callers should trust: those of cur, then those of prev (an
// earlier bundle) that are still valid at now and not in cur, at most keep in all. Certificates that are
// not CAs are dropped: a bundle never trusts a leaf directly. Keeping the previous CA while certificates
// it signed are still served lets a CA be renewed without refused calls.
func Bundle(cur, prev []byte, now time.Time, keep int) []byte {
	var out []byte
	seen := map[string]bool{}
	for i, in := range [][]byte{cur, prev} {
		for rest := in; len(seen) < keep; {
			var b *pem.Block
			if b, rest = pem.Decode(rest); b == nil {
				break
			}
			if b.Type != "CERTIFICATE" || seen[string(b.Bytes)] {
				continue
			}
			if c, err := x509.ParseCertificate(b.Bytes); err != nil || !c.IsCA || (i > 0 && now.After(c.NotAfter)) {
				continue
			}
			seen[string(b.Bytes)] = true
			out = append(out, pem.EncodeToMemory(b)...)
		}
	}
	return out
}

// Pool returns a pool trusting only the CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	return n
}

// VerifyChain checks a server's certificates (the leaf first, then its intermediates, as a TLS handshake
// gives them) for name against roots, as crypto/tls does against a fixed pool: for clients whose roots
// change while they run (a tls.Config.VerifyConnection).
func VerifyChain(peer []*x509.Certificate, roots *x509.CertPool, name string) error {
	if len(peer) == 0 {
		return errors.New("the server sent no certificate")
	}
	if roots == nil {
		return errors.New("no CA to verify the server's certificate against yet")
	}
	inter := x509.NewCertPool()
	for _, c := range peer[1:] {
		inter.AddCert(c)
	}
	_, err := peer[0].Verify(x509.VerifyOptions{DNSName: name, Roots: roots, Intermediates: inter})
	return err
}
