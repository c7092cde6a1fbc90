package source

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"syscall"
	"time"

	"github.com/wasm-operator/wasm-operator/internal/netguard"
)

// Defaults for the network options of every fetcher.
const (
	DefaultConnectTimeout = 10 * time.Second
	DefaultReadTimeout    = 60 * time.Second
	DefaultRetries        = 3
	DefaultBackoff        = time.Second
	maxBackoff            = 30 * time.Second
)

// netOptions are the options HTTP and OCI share.
type netOptions struct {
	caPEM          []byte
	connectTimeout time.Duration
	readTimeout    time.Duration
	retries        int
	backoff        time.Duration
	guard          *Guard // nil: no address checks
}

func (o *netOptions) defaults() {
	if o.connectTimeout <= 0 {
		o.connectTimeout = DefaultConnectTimeout
	}
	if o.readTimeout <= 0 {
		o.readTimeout = DefaultReadTimeout
	}
	if o.retries == 0 {
		o.retries = DefaultRetries
	} else if o.retries < 0 {
		o.retries = 0
	}
	if o.backoff <= 0 {
		o.backoff = DefaultBackoff
	}
}

// newTransport builds a transport whose dial and TLS handshake are bounded by
// the connect timeout and whose every read waits at most the read timeout, so
// a stalled server fails the fetch while a slow but steady download of a big
// module does not.
func newTransport(o netOptions) (*http.Transport, error) {
	t := http.DefaultTransport.(*http.Transport).Clone()
	d := &netguard.Dialer{Dialer: net.Dialer{Timeout: o.connectTimeout, KeepAlive: 30 * time.Second}}
	if o.guard != nil {
		d.Check, d.Resolver = o.guard.checkAddr, o.guard.resolver
	}
	t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &deadlineConn{Conn: c, timeout: o.readTimeout}, nil
	}
	t.TLSHandshakeTimeout = o.connectTimeout
	t.ResponseHeaderTimeout = o.readTimeout
	t.Proxy = http.ProxyFromEnvironment
	if len(o.caPEM) > 0 {
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(o.caPEM) {
			return nil, errors.New("the CA certificate given is not PEM (expected -----BEGIN CERTIFICATE-----); fix the CA in the secret")
		}
		t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return t, nil
}

// deadlineConn gives each Read its own deadline.
type deadlineConn struct {
	net.Conn
	timeout time.Duration
}

func (c *deadlineConn) Read(p []byte) (int, error) {
	if err := c.Conn.SetReadDeadline(time.Now().Add(c.timeout)); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

// classifyNetErr turns an error from the network into an *Error: certificate
// and protocol problems are permanent, everything else is transient and
// retried.
func classifyNetErr(typ, ref string, err error, o netOptions) *Error {
	e := &Error{Type: typ, Ref: ref, Err: err}
	var certErr *tls.CertificateVerificationError
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invalidCert x509.CertificateInvalidError
	var recErr tls.RecordHeaderError
	switch {
	case errors.Is(err, errRefusedAddress):
		// Permanent, and without the cause: the dial error names the resolved address and port.
		var r *refusal
		errors.As(err, &r)
		e.Msg, e.Kind, e.Err = r.msg, ErrInvalid, nil
	case errors.As(err, &certErr) || errors.As(err, &unknownCA) || errors.As(err, &hostErr) || errors.As(err, &invalidCert):
		e.Msg = "the server's TLS certificate is not trusted; put the CA that signed it in the secret, or fix the host name"
	case errors.As(err, &recErr):
		e.Msg = "the server does not speak TLS on this port; use http:// (or insecure for a registry) or fix the port"
	case errors.Is(err, context.Canceled):
		e.Msg = "the fetch was cancelled"
		e.Transient = true
	case errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		e.Msg = fmt.Sprintf("timed out (connect timeout %s, read timeout %s); will retry", o.connectTimeout, o.readTimeout)
		e.Transient, e.retry = true, true
	case errors.Is(err, syscall.ECONNREFUSED):
		e.Msg = "connection refused; check the host and port, will retry"
		e.Transient, e.retry = true, true
	default:
		e.Msg = "network error; will retry"
		e.Transient, e.retry = true, true
	}
	return e
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// retrying runs once until it succeeds, fails in a way that is not retried, or
// runs out of retries, doubling the wait between attempts.
func retrying(ctx context.Context, o netOptions, once func() (*Artifact, error)) (*Artifact, error) {
	wait := o.backoff
	for attempt := 0; ; attempt++ {
		a, err := once()
		if err == nil {
			return a, nil
		}
		var e *Error
		if !errors.As(err, &e) || !e.retry || attempt >= o.retries {
			if e != nil && e.retry && attempt > 0 {
				e.Msg += fmt.Sprintf(" (gave up after %d attempts)", attempt+1)
			}
			return nil, err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, err
		case <-t.C:
		}
		wait = min(wait*2, maxBackoff)
	}
}

// readCapped reads r up to max bytes; ok is false when r holds more.
func readCapped(r io.Reader, max int64, sizeHint int64) ([]byte, bool, error) {
	var buf []byte
	if sizeHint > 0 && sizeHint <= max {
		buf = make([]byte, 0, sizeHint+1)
	}
	w := bytesWriter{buf}
	n, err := io.Copy(&w, io.LimitReader(r, max+1))
	if err != nil {
		return nil, false, err
	}
	if n > max {
		return nil, false, nil
	}
	return w.b, true, nil
}

type bytesWriter struct{ b []byte }

func (w *bytesWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

func newTLSConfig() *tls.Config { return &tls.Config{MinVersion: tls.VersionTLS12} }
