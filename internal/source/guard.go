package source

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"

	"github.com/wasm-operator/wasm-operator/internal/netguard"
)

// Guard says which hosts and addresses fetches may reach. Whoever may create a WasmPlugin chooses
// its source URL, so without a guard the controller would read internal endpoints (the cloud
// metadata service, a sidecar on loopback) on their behalf and tell them what answered. Loopback,
// link-local (169.254.169.254 included), unspecified and multicast addresses are always refused;
// private ones when DenyPrivateNetworks. The checks run on every request (each redirect is one) for
// the URL's host, and at dial time on every address a name resolves to, with the dialer the plugins'
// HTTP uses (netguard), so DNS rebinding gains nothing. When an HTTP proxy is configured
// ($HTTPS_PROXY), the dial check sees the proxy's address and the host checks the target's name.
type Guard struct {
	// DenyPrivateNetworks refuses private addresses too (RFC 1918, unique-local, carrier-grade NAT
	// and other non-public ranges): set it when modules come only from the internet.
	DenyPrivateNetworks bool
	// AllowedHosts, when set, are the only hosts sources may name, as lowercase globs ("*" matches
	// any run of characters): "registry.example.com", "*.example.org". Redirects must stay within
	// them too.
	AllowedHosts []string
	// AllowLoopback lets loopback addresses through, for a development stack where the controller,
	// its file server and its registry run on one machine. Never in a cluster.
	AllowLoopback bool

	// exempt lets tests reach a loopback server that stands for a public one; resolver stands for
	// public DNS.
	exempt   func(netip.AddrPort) bool
	resolver *net.Resolver
}

// errRefusedAddress marks a source the guard refused; its message says which rule.
var errRefusedAddress = errors.New("address refused")

// refusal is the error a guard check returns.
type refusal struct{ msg string }

func (r *refusal) Error() string        { return r.msg }
func (r *refusal) Is(target error) bool { return target == errRefusedAddress }

// checkAddr refuses an address (resolved, or a literal in a URL) that the guard does not allow.
func (g *Guard) checkAddr(ap netip.AddrPort) error {
	if g == nil || (g.exempt != nil && g.exempt(ap)) {
		return nil
	}
	a := ap.Addr().Unmap()
	switch {
	case a.IsLoopback() && g.AllowLoopback:
		return nil
	case netguard.Local(a):
		return &refusal{"the source host is or resolves to a loopback, link-local or unspecified address, which the controller never fetches from; serve the module from another host"}
	case g.DenyPrivateNetworks && netguard.Private(a):
		return &refusal{"the source host is or resolves to a private address, and the controller runs with --source-deny-private-networks; serve the module from a public host or turn that flag off"}
	}
	return nil
}

// checkHost refuses a host name that is not among AllowedHosts, or an address literal checkAddr refuses.
func (g *Guard) checkHost(host string, port uint16) error {
	if g == nil {
		return nil
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if len(g.AllowedHosts) > 0 {
		ok := false
		for _, p := range g.AllowedHosts {
			if netguard.Glob(strings.ToLower(strings.TrimSuffix(p, ".")), host) {
				ok = true
				break
			}
		}
		if !ok {
			return &refusal{fmt.Sprintf("host %s is not in the controller's --allowed-source-hosts; use an allowed host or ask the operator's administrator to allow it", host)}
		}
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return g.checkAddr(netip.AddrPortFrom(a, port))
	}
	return nil
}

// guardedTransport checks the host of every request, redirects included, before it is sent.
type guardedTransport struct {
	g    *Guard
	next http.RoundTripper
}

func (t guardedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := t.g.checkHost(req.URL.Hostname(), portOf(req)); err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	return t.next.RoundTrip(req)
}

func portOf(req *http.Request) uint16 {
	var p uint16
	fmt.Sscan(req.URL.Port(), &p)
	switch {
	case p != 0:
		return p
	case req.URL.Scheme == "https":
		return 443
	}
	return 80
}

// wrap returns rt behind the guard's host checks; a nil guard returns rt.
func (g *Guard) wrap(rt http.RoundTripper) http.RoundTripper {
	if g == nil {
		return rt
	}
	return guardedTransport{g: g, next: rt}
}
