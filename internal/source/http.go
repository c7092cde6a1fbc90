package source

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// HTTPOptions configure an HTTP(S) fetch. The zero value uses the defaults.
type HTTPOptions struct {
	// Headers are added to the request. "Host" sets the Host header.
	Headers map[string]string
	// BearerToken, when set, is sent as "Authorization: Bearer <token>".
	// It may not be combined with an Authorization header in Headers.
	BearerToken string
	// CAPEM holds PEM certificates trusted in addition to the system roots.
	CAPEM []byte
	// ConnectTimeout bounds the TCP connect and the TLS handshake.
	// Default DefaultConnectTimeout (10s).
	ConnectTimeout time.Duration
	// ReadTimeout bounds the wait for the response headers and for each read
	// of the body, so a stalled server fails while a slow steady download
	// does not. Default DefaultReadTimeout (60s).
	ReadTimeout time.Duration
	// Retries is how many times a network error or a 5xx answer is retried
	// within this call; 4xx answers are never retried. 0 means
	// DefaultRetries (3); negative means none.
	Retries int
	// Backoff is the wait before the first retry; it doubles after each
	// retry, up to 30s. Default DefaultBackoff (1s).
	Backoff time.Duration
	// MaxBytes caps the module size; a larger module is refused with
	// ErrTooLarge, from its Content-Length when the server sends one and
	// otherwise while reading. Default DefaultMaxBytes (256 MiB).
	MaxBytes int64
}

// HTTP fetches the module at rawURL (http or https). It follows redirects,
// retries network errors and 5xx answers with exponential backoff, maps 404
// and 410 to ErrNotFound and 401 and 403 to ErrUnauthorized, and refuses
// content that is not a WebAssembly module.
func (f *Fetcher) HTTP(ctx context.Context, rawURL string, opts HTTPOptions) (*Artifact, error) {
	start := time.Now()
	a, err := fetchHTTP(ctx, rawURL, opts, f.Guard)
	f.observe("http", start, a, err)
	return a, err
}

func fetchHTTP(ctx context.Context, rawURL string, opts HTTPOptions, guard *Guard) (*Artifact, error) {
	u, err := url.Parse(rawURL)
	ref := rawURL
	if err == nil {
		ref = u.Redacted()
	}
	fail := func(kind error, msg string) error {
		return &Error{Type: "http", Ref: ref, Kind: kind, Msg: msg}
	}
	if err != nil {
		return nil, fail(ErrInvalid, "not a valid URL; set spec.source.http.url to an http:// or https:// URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fail(ErrInvalid, fmt.Sprintf("URL scheme %q is not supported; use http:// or https://", u.Scheme))
	}
	if u.Host == "" {
		return nil, fail(ErrInvalid, "URL has no host; set spec.source.http.url to a full URL such as https://example.com/plugin.wasm")
	}
	header := http.Header{}
	host := ""
	for k, v := range opts.Headers {
		if !validHeaderName(k) {
			return nil, fail(ErrInvalid, fmt.Sprintf("header name %q is not valid; fix the headers in the secret", k))
		}
		if strings.ContainsAny(v, "\r\n\x00") {
			return nil, fail(ErrInvalid, fmt.Sprintf("value of header %q contains a line break or NUL; fix the headers in the secret", k))
		}
		if http.CanonicalHeaderKey(k) == "Host" {
			host = v
			continue
		}
		header.Set(k, v)
	}
	if opts.BearerToken != "" {
		if header.Get("Authorization") != "" {
			return nil, fail(ErrInvalid, "both a bearer token and an Authorization header are set; keep one of them in the secret")
		}
		if strings.ContainsAny(opts.BearerToken, "\r\n\x00") {
			return nil, fail(ErrInvalid, "the bearer token contains a line break or NUL; remove the trailing newline from the token in the secret")
		}
		header.Set("Authorization", "Bearer "+opts.BearerToken)
	}
	no := netOptions{caPEM: opts.CAPEM, connectTimeout: opts.ConnectTimeout, readTimeout: opts.ReadTimeout,
		retries: opts.Retries, backoff: opts.Backoff, guard: guard}
	no.defaults()
	max := opts.MaxBytes
	if max <= 0 {
		max = DefaultMaxBytes
	}
	tr, err := newTransport(no)
	if err != nil {
		return nil, fail(ErrInvalid, err.Error())
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: guard.wrap(tr)}

	return retrying(ctx, no, func() (*Artifact, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			return nil, fail(ErrInvalid, "cannot build the request: "+err.Error())
		}
		req.Header = header.Clone()
		if host != "" {
			req.Host = host
		}
		req.Header.Set("Accept", "application/wasm, application/octet-stream;q=0.9, */*;q=0.5")
		resp, err := client.Do(req)
		if err != nil {
			return nil, classifyNetErr("http", ref, err, no)
		}
		defer resp.Body.Close()
		if e := classifyStatus(ref, resp.StatusCode); e != nil {
			return nil, e
		}
		if resp.ContentLength > max {
			return nil, fail(ErrTooLarge, fmt.Sprintf("the server announces %d bytes, more than the %d byte limit; use a smaller module or raise the limit", resp.ContentLength, max))
		}
		data, ok, err := readCapped(resp.Body, max, resp.ContentLength)
		if err != nil {
			return nil, classifyNetErr("http", ref, err, no)
		}
		if !ok {
			return nil, fail(ErrTooLarge, fmt.Sprintf("the module is larger than the %d byte limit; use a smaller module or raise the limit", max))
		}
		if msg, ok := checkWasm(data); !ok {
			return nil, fail(ErrNotWasm, msg+"; check that the URL points at the .wasm file itself")
		}
		return newArtifact(data, ref), nil
	})
}

// classifyStatus maps an HTTP status to an error, or nil for success.
func classifyStatus(ref string, code int) *Error {
	e := &Error{Type: "http", Ref: ref}
	status := fmt.Sprintf("server answered %d %s", code, http.StatusText(code))
	switch {
	case code >= 200 && code < 300:
		return nil
	case code == http.StatusNotFound || code == http.StatusGone:
		e.Kind, e.Msg = ErrNotFound, status+"; check spec.source.http.url"
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		e.Kind, e.Msg = ErrUnauthorized, status+"; check the bearer token or headers in the secret named by spec.source.http.secretRef"
	case code == http.StatusTooManyRequests || code == http.StatusRequestTimeout:
		e.Transient, e.Msg = true, status+"; will retry later"
	case code >= 500:
		e.Transient, e.retry, e.Msg = true, true, status+"; will retry"
	default:
		e.Msg = status + "; check the URL and the secret"
	}
	return e
}

// validHeaderName reports whether s is an RFC 9110 token.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}
