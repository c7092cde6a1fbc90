// Package hostcerts gives each host its own serving certificate for the call API, through the Kubernetes
// CertificateSigningRequest API: a host makes a key that never leaves its memory and asks for a
// certificate of the signer the controller runs (Requester); the controller checks that the request comes
// from the hosts' ServiceAccount with a pod-bound token naming its node and asks only for the host
// Service's names (Review), then approves and signs it with the CA it keeps in a Secret (Signer, CAKeeper),
// and publishes the CA bundle callers trust in a ConfigMap. Certificates are short-lived (a day by
// default) and renewed before they expire, so a key taken from one node is worth little and for long to
// no one; no Secret holds a serving key.
package hostcerts

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"slices"
	"strings"
	"time"

	certv1 "k8s.io/api/certificates/v1"
)

// NodeNameExtra is the user extra a pod-bound ServiceAccount token carries: the node of its pod.
const NodeNameExtra = "authentication.kubernetes.io/node-name"

// MinDuration is the shortest certificate the signer issues (the API server's floor for
// spec.expirationSeconds).
const MinDuration = 10 * time.Minute

// Policy is what the signer issues, and to whom.
type Policy struct {
	// SignerName is the spec.signerName of the requests this signer handles.
	SignerName string
	// Requester is the only user whose requests are signed: the hosts' ServiceAccount,
	// system:serviceaccount:<namespace>:<name>.
	Requester string
	// DNSNames are the names a host certificate may hold: the host Service's.
	DNSNames []string
	// MaxDuration caps the certificates' lifetime (spec.expirationSeconds asks for less).
	MaxDuration time.Duration
}

// Grant is what an accepted request is signed for.
type Grant struct {
	// PublicKey is the request's key.
	PublicKey any
	// Node is the node of the requesting host (from its token), in the certificate's common name.
	Node string
	// DNSNames are the requested names, all in Policy.DNSNames.
	DNSNames []string
	// Duration is the certificate's lifetime.
	Duration time.Duration
}

// CommonName is the subject of the certificate of the host of node.
func CommonName(node string) string { return "wasm-operator-host:" + node }

var allowedUsages = map[certv1.KeyUsage]bool{
	certv1.UsageDigitalSignature: true, certv1.UsageKeyEncipherment: true, certv1.UsageServerAuth: true,
}

// Review decides whether the signer of p signs csr, and for what. Its error says what the request got
// wrong; the signer denies the request with it.
func Review(csr *certv1.CertificateSigningRequest, p Policy) (Grant, error) {
	var g Grant
	if csr.Spec.SignerName != p.SignerName {
		return g, fmt.Errorf("the request is for signer %q, not %q", csr.Spec.SignerName, p.SignerName)
	}
	if csr.Spec.Username != p.Requester {
		return g, fmt.Errorf("requested by %q: only the hosts' ServiceAccount (%s) gets host serving certificates", csr.Spec.Username, p.Requester)
	}
	nodes := csr.Spec.Extra[NodeNameExtra]
	if len(nodes) != 1 || nodes[0] == "" {
		return g, fmt.Errorf("the requester's token names no node (user extra %s): only a host with a pod-bound ServiceAccount token gets a certificate", NodeNameExtra)
	}
	g.Node = nodes[0]
	if !slices.Contains(csr.Spec.Usages, certv1.UsageServerAuth) {
		return g, fmt.Errorf("usages %v lack %q", csr.Spec.Usages, certv1.UsageServerAuth)
	}
	for _, u := range csr.Spec.Usages {
		if !allowedUsages[u] {
			return g, fmt.Errorf("usage %q is not for a serving certificate: ask for %q, %q and %q only", u,
				certv1.UsageDigitalSignature, certv1.UsageKeyEncipherment, certv1.UsageServerAuth)
		}
	}
	b, rest := pem.Decode(csr.Spec.Request)
	if b == nil || b.Type != "CERTIFICATE REQUEST" || len(strings.TrimSpace(string(rest))) != 0 {
		return g, fmt.Errorf("spec.request must be one PEM CERTIFICATE REQUEST block")
	}
	req, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return g, fmt.Errorf("parse the certificate request: %w", err)
	}
	if err := req.CheckSignature(); err != nil {
		return g, fmt.Errorf("the certificate request's signature: %w", err)
	}
	if err := checkKey(req.PublicKey); err != nil {
		return g, err
	}
	if len(req.IPAddresses) > 0 || len(req.EmailAddresses) > 0 || len(req.URIs) > 0 {
		return g, fmt.Errorf("the request asks for IP addresses, emails or URIs: a host certificate holds only the names %s", strings.Join(p.DNSNames, ", "))
	}
	if len(req.DNSNames) == 0 {
		return g, fmt.Errorf("the request names no DNS name: ask for the host Service's (%s)", strings.Join(p.DNSNames, ", "))
	}
	for _, n := range req.DNSNames {
		if !slices.Contains(p.DNSNames, n) {
			return g, fmt.Errorf("the name %q is not the host Service's: a host certificate may hold only %s", n, strings.Join(p.DNSNames, ", "))
		}
	}
	g.PublicKey, g.DNSNames, g.Duration = req.PublicKey, req.DNSNames, p.MaxDuration
	if s := csr.Spec.ExpirationSeconds; s != nil && time.Duration(*s)*time.Second < g.Duration {
		g.Duration = max(time.Duration(*s)*time.Second, MinDuration)
	}
	return g, nil
}

func checkKey(k any) error {
	switch k := k.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return fmt.Errorf("ECDSA key on curve %s: use P-256 or P-384", k.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return fmt.Errorf("RSA key of %d bits: use at least 2048", k.N.BitLen())
		}
	case ed25519.PublicKey:
	default:
		return fmt.Errorf("key type %T: use ECDSA P-256, RSA of 2048 bits or more, or Ed25519", k)
	}
	return nil
}
