package hostcerts

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	mrand "math/rand/v2"
	"sync"
	"time"

	"github.com/go-logr/logr"
	certv1 "k8s.io/api/certificates/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// DefaultDuration is the lifetime a host asks for: a day, renewed after two thirds of it.
const DefaultDuration = 24 * time.Hour

// MaxDuration is the longest lifetime a host may ask for.
const MaxDuration = 365 * 24 * time.Hour

// Requester is a host's serving certificate, asked of the signer through a CertificateSigningRequest
// with a key made in memory, and renewed after two thirds of its life. Until the first one is issued,
// it serves a self-signed certificate no caller trusts (so /healthz answers the kubelet's probe over
// HTTPS) and Ready says what it waits for.
type Requester struct {
	Client     kubernetes.Interface
	SignerName string
	Node       string
	DNSNames   []string
	// Duration asked for (DefaultDuration when 0); the signer may cut it.
	Duration time.Duration
	// Wait is how long one request waits to be signed before it is asked again (default two minutes).
	Wait time.Duration
	Log  logr.Logger

	// pending is the request still waiting to be signed, asked again (not anew) at the next attempt, so
	// that hosts waiting for a signer that is down do not pile up requests. Start's goroutine only.
	pending *pendingRequest

	mu       sync.Mutex
	cert     *tls.Certificate // issued; nil until the first
	notAfter time.Time
	lastErr  error
	temp     *tls.Certificate
}

// GetCertificate is for tls.Config.GetCertificate: the issued certificate, or the placeholder.
func (r *Requester) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cert != nil {
		return r.cert, nil
	}
	if r.temp == nil {
		c, err := selfSigned(r.Node)
		if err != nil {
			return nil, err
		}
		r.temp = c
	}
	return r.temp, nil
}

// TLSConfig returns a server configuration (TLS 1.2 or later) whose certificate comes from r.
func (r *Requester) TLSConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: r.GetCertificate, NextProtos: []string{"h2", "http/1.1"}}
}

// Ready is nil while an issued certificate is valid; otherwise it says what the host waits for.
func (r *Requester) Ready() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cert != nil && time.Now().Before(r.notAfter) {
		return nil
	}
	msg := fmt.Sprintf("no serving certificate yet: waiting for signer %s to sign this host's CertificateSigningRequest", r.SignerName)
	if r.cert != nil {
		msg = fmt.Sprintf("the serving certificate expired at %s and no new one was signed by %s", r.notAfter.Format(time.RFC3339), r.SignerName)
	}
	if r.lastErr != nil {
		msg += ": " + r.lastErr.Error()
	}
	return errors.New(msg)
}

type pendingRequest struct {
	name string
	key  *ecdsa.PrivateKey
}

// minRenewal is the least time between two requests after a certificate was issued.
const minRenewal = 30 * time.Second

// Start asks for certificates until ctx ends: at once, then after two thirds of each one's life (with a
// tenth of jitter, so a thousand hosts started together do not renew together); a failed request is
// asked again after a backoff of 5 s doubling to 2 min, while a valid certificate keeps serving.
func (r *Requester) Start(ctx context.Context) error {
	backoff := 5 * time.Second
	for {
		next := backoff
		cert, notAfter, err := r.request(ctx)
		r.mu.Lock()
		if err == nil {
			r.cert, r.notAfter, r.lastErr = cert, notAfter, nil
			next = renewIn(time.Until(notAfter))
			backoff = 5 * time.Second
		} else {
			r.lastErr = err
			backoff = min(2*backoff, 2*time.Minute)
		}
		r.mu.Unlock()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			r.Log.Error(err, "serving certificate request", "retryIn", next.String())
		} else {
			r.Log.Info("serving certificate issued", "notAfter", notAfter.Format(time.RFC3339), "renewIn", next.Round(time.Second).String())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(next):
		}
	}
}

// renewIn is when to renew a certificate with life left: after two thirds of it, less up to a tenth
// (jitter), never sooner than minRenewal.
func renewIn(life time.Duration) time.Duration {
	next := life * 2 / 3
	if life > 0 {
		next -= time.Duration(mrand.Int64N(int64(life/10) + 1))
	}
	return max(next, minRenewal)
}

// errNotYet is a request not signed within the wait; it is asked again.
var errNotYet = errors.New("not signed yet")

// request waits for the certificate of the pending request, or makes a key and a new request.
func (r *Requester) request(ctx context.Context) (*tls.Certificate, time.Time, error) {
	csrs := r.Client.CertificatesV1().CertificateSigningRequests()
	if r.pending == nil {
		p, err := r.create(ctx)
		if err != nil {
			return nil, time.Time{}, err
		}
		r.pending = p
	}
	p := r.pending
	wait := r.Wait
	if wait <= 0 {
		wait = 2 * time.Minute
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	certPEM, err := awaitCertificate(wctx, csrs, p.name)
	if err != nil {
		if !errors.Is(err, errNotYet) {
			r.pending = nil // denied, failed, deleted: the next attempt asks anew
		}
		return nil, time.Time{}, fmt.Errorf("CertificateSigningRequest %s: %w", p.name, err)
	}
	r.pending = nil
	kder, err := x509.MarshalECPrivateKey(p.key)
	if err != nil {
		return nil, time.Time{}, err
	}
	pair, err := tls.X509KeyPair(certPEM, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("CertificateSigningRequest %s: the issued certificate: %w", p.name, err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, time.Time{}, err
	}
	if left := time.Until(leaf.NotAfter); left < minRenewal {
		return nil, time.Time{}, fmt.Errorf("CertificateSigningRequest %s: the issued certificate expires at %s, %s from now: is the signer's CA about to expire?",
			p.name, leaf.NotAfter.Format(time.RFC3339), left.Round(time.Second))
	}
	pair.Leaf = leaf
	return &pair, leaf.NotAfter, nil
}

// create makes a key and a CertificateSigningRequest for it.
func (r *Requester) create(ctx context.Context) (*pendingRequest, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: CommonName(r.Node)}, DNSNames: r.DNSNames}, key)
	if err != nil {
		return nil, err
	}
	d := r.Duration
	if d <= 0 {
		d = DefaultDuration
	}
	csr := &certv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "wasm-operator-host-" + truncate(r.Node, 200) + "-"},
		Spec: certv1.CertificateSigningRequestSpec{
			Request:           pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}),
			SignerName:        r.SignerName,
			Usages:            []certv1.KeyUsage{certv1.UsageDigitalSignature, certv1.UsageServerAuth},
			ExpirationSeconds: ptr.To(int32(min(d, MaxDuration) / time.Second)),
		},
	}
	if csr, err = r.Client.CertificatesV1().CertificateSigningRequests().Create(ctx, csr, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("create a CertificateSigningRequest: %w", err)
	}
	return &pendingRequest{name: csr.Name, key: key}, nil
}

type csrClient interface {
	Watch(context.Context, metav1.ListOptions) (watch.Interface, error)
	Get(context.Context, string, metav1.GetOptions) (*certv1.CertificateSigningRequest, error)
}

// awaitCertificate watches the request name until it holds a certificate, or is denied, failed or
// deleted; errNotYet when ctx ends first.
func awaitCertificate(ctx context.Context, csrs csrClient, name string) ([]byte, error) {
	csr, err := csrs.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, errors.New("deleted before it was signed")
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, errNotYet
		}
		return nil, fmt.Errorf("read: %w", err)
	}
	for {
		if len(csr.Status.Certificate) > 0 {
			return csr.Status.Certificate, nil
		}
		for _, c := range csr.Status.Conditions {
			if c.Type == certv1.CertificateDenied || c.Type == certv1.CertificateFailed {
				return nil, fmt.Errorf("%s by the signer (%s): %s", c.Type, c.Reason, c.Message)
			}
		}
		w, err := csrs.Watch(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", name).String(),
			ResourceVersion: csr.ResourceVersion})
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("%w (is the controller running, and is it the signer %s?)", errNotYet, csr.Spec.SignerName)
			}
			return nil, fmt.Errorf("watch: %w", err)
		}
		updated := false
		for ev := range w.ResultChan() {
			if c, ok := ev.Object.(*certv1.CertificateSigningRequest); ok && (ev.Type == watch.Modified || ev.Type == watch.Added) {
				csr, updated = c, true
				break
			}
			if ev.Type == watch.Deleted {
				w.Stop()
				return nil, errors.New("deleted before it was signed")
			}
		}
		w.Stop()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w (is the controller running, and is it the signer %s?)", errNotYet, csr.Spec.SignerName)
		}
		if !updated { // the watch ended (expired version, a restart of the API server): read it again
			if csr, err = csrs.Get(ctx, name, metav1.GetOptions{}); err != nil {
				if apierrors.IsNotFound(err) {
					return nil, errors.New("deleted before it was signed")
				}
				return nil, fmt.Errorf("read: %w", err)
			}
		}
	}
}

// selfSigned is the placeholder certificate served before the first is issued.
func selfSigned(node string) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: CommonName(node) + " (not yet signed)"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
