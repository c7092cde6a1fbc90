package hostapi

import (
	"crypto/tls"
	"fmt"
	"os"
	"sync"
	"time"
)

// CertReloader serves a certificate and key read from files, and reads them again when they
// change, so a rotated serving certificate (a Secret volume updated by cert-manager or by a chart
// upgrade) is used for new connections without a restart. It checks the files at most every
// checkEvery; a pair that cannot be loaded keeps the previous certificate in service.
type CertReloader struct {
	certFile, keyFile string
	checkEvery        time.Duration
	now               func() time.Time

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   string // modification times and sizes of both files at the last load
	checked time.Time
	lastErr error
}

// NewCertReloader loads certFile and keyFile (PEM) and returns a reloader serving them.
func NewCertReloader(certFile, keyFile string) (*CertReloader, error) {
	r := &CertReloader{certFile: certFile, keyFile: keyFile, checkEvery: time.Second, now: time.Now}
	if err := r.reload(); err != nil {
		return nil, err
	}
	return r, nil
}

// TLSConfig returns a server configuration (TLS 1.2 or later) whose certificate comes from r.
func (r *CertReloader) TLSConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: r.GetCertificate, NextProtos: []string{"h2", "http/1.1"}}
}

// GetCertificate is for tls.Config.GetCertificate.
func (r *CertReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := r.now(); now.Sub(r.checked) >= r.checkEvery {
		r.checked = now
		if st, err := r.fileStamp(); err == nil && st != r.stamp {
			r.lastErr = r.reloadLocked()
		}
	}
	return r.cert, nil
}

// Err reports why the last reload failed, or nil.
func (r *CertReloader) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastErr
}

func (r *CertReloader) reload() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reloadLocked()
}

func (r *CertReloader) reloadLocked() error {
	st, err := r.fileStamp()
	if err != nil {
		return err
	}
	c, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("load the serving certificate %s and key %s: %w", r.certFile, r.keyFile, err)
	}
	r.cert, r.stamp = &c, st
	return nil
}

func (r *CertReloader) fileStamp() (string, error) {
	var s string
	for _, f := range []string{r.certFile, r.keyFile} {
		fi, err := os.Stat(f) // follows the ..data symlink of a Secret volume
		if err != nil {
			return "", fmt.Errorf("serving certificate: %w", err)
		}
		s += fmt.Sprintf("%d/%d;", fi.ModTime().UnixNano(), fi.Size())
	}
	return s, nil
}
