package runtime

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/tetratelabs/wazero/api"

	"github.com/wasm-operator/wasm-operator/internal/netguard"
)

// httpGuard makes a plugin's HTTP requests: only to allowed hosts, never to private or
// cluster-internal addresses unless allowed, and within size and time bounds.
type httpGuard struct {
	perm     HTTP
	allowed  []string // lowercased globs
	maxBytes int64
	client   *http.Client

	// exempt lets tests reach a loopback server that stands for a public one.
	exempt func(netip.AddrPort) bool
}

// errPrivateAddress is the cause of a refused connection or redirect.
var errPrivateAddress = errors.New("private or cluster-internal address")

func newHTTPGuard(perm HTTP) *httpGuard {
	g := &httpGuard{perm: perm, maxBytes: perm.MaxResponseBytes}
	if g.maxBytes <= 0 {
		g.maxBytes = defaultMaxHTTPResponseBytes
	}
	for _, h := range perm.AllowedHosts {
		g.allowed = append(g.allowed, strings.ToLower(strings.TrimSuffix(h, ".")))
	}
	// Names are resolved as absolute, so search domains never make "redis.ns" a cluster name.
	dialer := &netguard.Dialer{Dialer: net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second, Control: g.control}}
	g.client = &http.Client{
		Transport: &http.Transport{
			Proxy:                 nil, // a proxy would connect on the plugin's behalf, past the address check
			DialContext:           dialer.DialContext,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          16,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   10 * time.Second,
			ExpectContinueTimeout: time.Second,
		},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 10 {
				return errors.New("stopped after 10 redirects")
			}
			if err := g.check(req.URL); err != nil {
				return fmt.Errorf("redirect to '%s' refused: %w", req.URL, err)
			}
			return nil
		},
	}
	return g
}

// control runs after DNS resolution, just before each connection is made (redirects included),
// so a name that resolves to a private address is caught whatever it is called.
func (g *httpGuard) control(network, address string, _ syscall.RawConn) error {
	if g.perm.AllowPrivateNetworks {
		return nil
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", address, err)
	}
	if privateAddr(ap.Addr()) && (g.exempt == nil || !g.exempt(ap)) {
		return fmt.Errorf("connect to %s refused: %w (grant permissions.http.allowPrivateNetworks to allow it)", address, errPrivateAddress)
	}
	return nil
}

// check refuses a URL whose host is not allowed, or is a private or cluster-internal name or
// address literal.
func (g *httpGuard) check(u *url.URL) error {
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("scheme %q is not http or https", u.Scheme)
	}
	host := strings.ToLower(strings.TrimSuffix(u.Hostname(), "."))
	if !g.allows(host) {
		return fmt.Errorf("host %s is not in permissions.http.allowedHosts", host)
	}
	if g.perm.AllowPrivateNetworks {
		return nil
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if privateAddr(a) && (g.exempt == nil || !g.exempt(netip.AddrPortFrom(a, port(u)))) {
			return fmt.Errorf("%s: %w", host, errPrivateAddress)
		}
		return nil
	}
	if internalName(host) {
		return fmt.Errorf("%s: %w", host, errPrivateAddress)
	}
	return nil
}

func port(u *url.URL) uint16 {
	var p uint16
	fmt.Sscan(u.Port(), &p)
	if p == 0 && u.Scheme == "https" {
		return 443
	}
	if p == 0 {
		return 80
	}
	return p
}

func (g *httpGuard) allows(host string) bool {
	for _, pattern := range g.allowed {
		if netguard.Glob(pattern, host) {
			return true
		}
	}
	return false
}

// internalName reports names that only mean something inside a cluster or a host: they are
// refused before any lookup, and their addresses would be refused at dial time anyway.
func internalName(host string) bool {
	if !strings.Contains(host, ".") { // "localhost", "kubernetes", "redis": search domains make them internal
		return true
	}
	for _, suffix := range []string{".localhost", ".local", ".internal", ".svc", ".cluster.local", ".svc.cluster.local"} {
		if strings.HasSuffix(host, suffix) {
			return true
		}
	}
	return false
}

// privateAddr reports loopback, private (RFC 1918), link-local (cloud metadata included),
// unique-local, multicast, unspecified and other non-public addresses, looking through IPv4
// embedded in IPv6 (mapped, translated, compatible, NAT64, 6to4); netguard.Private has the list.
func privateAddr(a netip.Addr) bool { return netguard.Private(a) }

// httpRequestJSON is what a guest passes to http_request.
type httpRequestJSON struct {
	URL     string            `json:"url"`
	Headers map[string]string `json:"headers"`
	Method  string            `json:"method"`
}

func httpRequest(ctx context.Context, _ api.Module, s []uint64) {
	i := instanceOf(ctx)
	g := i.plugin.http
	if g == nil {
		fault("http_request", "HTTP is not granted (%s)", permHTTP)
	}
	i.httpStatus = 0
	clear(i.httpHeaders)

	var req httpRequestJSON
	if err := json.Unmarshal(i.k.bytes("http_request", s[0]), &req); err != nil {
		fault("http_request", "invalid http request: %v", err)
	}
	i.k.free(s[0])
	method := strings.ToUpper(req.Method)
	if method == "" {
		method = http.MethodGet
	}
	u, err := url.Parse(req.URL)
	if err != nil {
		fault("http_request", "invalid url: %v", err)
	}
	if err := g.check(u); err != nil {
		fault("http_request", "HTTP request to '%v' is not allowed: %v", req.URL, err)
	}
	var body io.Reader
	if s[1] != 0 {
		body = bytes.NewReader(bytes.Clone(i.k.bytes("http_request", s[1])))
		i.k.free(s[1])
	}

	// The request gets its own context: it ends with the request's timeout, the call's deadline or
	// the call being stopped, whichever comes first.
	rctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if d := g.perm.Timeout; d > 0 {
		rctx, cancel = context.WithTimeout(rctx, d)
		defer cancel()
	}
	if !i.deadline.IsZero() {
		rctx, cancel = context.WithDeadline(rctx, i.deadline)
		defer cancel()
	}
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-i.killCh:
			cancel()
		case <-done:
		}
	}()

	hreq, err := http.NewRequestWithContext(rctx, method, req.URL, body)
	if err != nil {
		fault("http_request", "%v", err)
	}
	for k, v := range req.Headers {
		hreq.Header.Set(k, v)
	}
	resp, err := g.client.Do(hreq)
	if err != nil {
		fault("http_request", "%v", err)
	}
	defer resp.Body.Close()
	if i.httpHeaders == nil {
		i.httpHeaders = map[string]string{}
	}
	for k, v := range resp.Header {
		i.httpHeaders[strings.ToLower(k)] = strings.Join(v, ",")
	}
	i.httpStatus = resp.StatusCode
	// Read no further than the instance's memory budget allows: the body is then copied into the
	// kernel arena, which needs as much again.
	limit := g.maxBytes
	if left := int64(min(i.budget.left()/2, math.MaxInt64-1)); left < limit {
		limit = left
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		fault("http_request", "read response: %v", err)
	}
	if int64(len(data)) > limit {
		if limit < g.maxBytes {
			fault("http_request", "out of memory: the response body is over the %d bytes limits.maxMemory %s leaves", limit, formatBytes(i.budget.max))
		}
		fault("http_request", "response body over the limit of %d bytes (%s.maxResponseBytes)", g.maxBytes, permHTTP)
	}
	s[0] = i.k.put("http_request", data)
}

func httpHeaders(ctx context.Context, _ api.Module, s []uint64) {
	i := instanceOf(ctx)
	h := i.httpHeaders
	if h == nil {
		h = map[string]string{}
	}
	data, err := json.Marshal(h)
	if err != nil {
		fault("http_headers", "%v", err)
	}
	s[0] = i.k.put("http_headers", data)
}
