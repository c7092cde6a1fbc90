package netguard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
)

// ErrPrivate is the cause of a refused private address; ErrLocal of a refused loopback or
// link-local one.
var (
	ErrPrivate = errors.New("private or cluster-internal address")
	ErrLocal   = errors.New("loopback or link-local address")
)

var (
	translated = netip.MustParsePrefix("::ffff:0:0:0/96") // IPv4-translated (SIIT)
	compatible = netip.MustParsePrefix("::/96")           // IPv4-compatible (deprecated)
	nat64      = netip.MustParsePrefix("64:ff9b::/96")    // well-known NAT64
	sixToFour  = netip.MustParsePrefix("2002::/16")       // 6to4
	teredo     = netip.MustParsePrefix("2001::/32")       // Teredo: the IPv4 inside is obfuscated
	global6    = netip.MustParsePrefix("2000::/3")        // global unicast
)

var blockedPrefixes = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),      // "this network"
	netip.MustParsePrefix("100.64.0.0/10"),  // carrier-grade NAT, used by some pod networks
	netip.MustParsePrefix("192.0.0.0/24"),   // IETF protocol assignments
	netip.MustParsePrefix("198.18.0.0/15"),  // benchmarking
	netip.MustParsePrefix("240.0.0.0/4"),    // reserved, broadcast
	netip.MustParsePrefix("100::/64"),       // discard
	netip.MustParsePrefix("2001:db8::/32"),  // documentation
	netip.MustParsePrefix("64:ff9b:1::/48"), // local-use NAT64
	teredo,
}

// embedded returns the IPv4 address an IPv6 address carries in one of the embedding ranges, and
// the address itself otherwise.
func embedded(a netip.Addr) netip.Addr {
	a = a.Unmap() // ::ffff:a.b.c.d
	if !a.Is6() {
		return a
	}
	b := a.As16()
	switch {
	case translated.Contains(a), nat64.Contains(a):
		return netip.AddrFrom4([4]byte(b[12:16]))
	case compatible.Contains(a) && !a.IsLoopback() && !a.IsUnspecified():
		return netip.AddrFrom4([4]byte(b[12:16]))
	case sixToFour.Contains(a):
		return netip.AddrFrom4([4]byte(b[2:6]))
	}
	return a
}

// Local reports loopback, link-local (169.254.0.0/16 with cloud metadata, fe80::/10),
// unspecified and multicast addresses, also when embedded in IPv6. An invalid address is local.
func Local(a netip.Addr) bool {
	if !a.IsValid() {
		return true
	}
	a = embedded(a)
	return a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() ||
		a.IsInterfaceLocalMulticast() || a.IsMulticast() || a.IsUnspecified()
}

// Private reports every address that is not public unicast: Local ones, RFC 1918 and unique-local
// (fc00::/7) ones, carrier-grade NAT, reserved and documentation ranges, site-local and every
// IPv6 address outside global unicast (2000::/3), looking through embedded IPv4.
func Private(a netip.Addr) bool {
	if Local(a) {
		return true
	}
	a = embedded(a)
	if a.IsPrivate() {
		return true
	}
	for _, p := range blockedPrefixes {
		if p.Contains(a) {
			return true
		}
	}
	return a.Is6() && !global6.Contains(a)
}

// AbsoluteAddr returns a host:port address whose host name ends with a dot, so that a resolver
// never tries the search domains of resolv.conf. Address literals and names that already end with a
// dot are returned unchanged, and so is anything that is not host:port.
func AbsoluteAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" || strings.HasSuffix(host, ".") {
		return addr
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return addr
	}
	return net.JoinHostPort(host+".", port)
}

// Dialer connects only to addresses Check accepts. Names are resolved as absolute (AbsoluteAddr),
// and Check sees each address after resolution, just before its connection is made, so redirects
// and rebinding names are checked too when every connection goes through DialContext.
type Dialer struct {
	// Dialer holds the timeouts and the resolver; its Control, if any, runs after Check.
	net.Dialer
	// Check refuses an address with an error; nil accepts every address.
	Check func(netip.AddrPort) error
}

// DialContext dials addr (host:port) on network as net.Dialer does, with the checks above.
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	nd := d.Dialer
	inner := d.Dialer.Control
	nd.Control = func(network, address string, c syscall.RawConn) error {
		if d.Check != nil {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return fmt.Errorf("connect to %s: %w", address, err)
			}
			if err := d.Check(ap); err != nil {
				return err
			}
		}
		if inner != nil {
			return inner(network, address, c)
		}
		return nil
	}
	return nd.DialContext(ctx, network, AbsoluteAddr(addr))
}

// Glob matches a lowercased host name against pattern, where '*' matches any run of characters
// (dots included) and '?' one, as permissions.http.allowedHosts and --allowed-source-hosts do.
func Glob(pattern, s string) bool {
	px, sx := 0, 0
	starP, starS := -1, 0
	for sx < len(s) {
		switch {
		case px < len(pattern) && (pattern[px] == '?' || pattern[px] == s[sx]):
			px++
			sx++
		case px < len(pattern) && pattern[px] == '*':
			starP, starS = px, sx
			px++
		case starP >= 0:
			starS++
			px, sx = starP+1, starS
		default:
			return false
		}
	}
	for px < len(pattern) && pattern[px] == '*' {
		px++
	}
	return px == len(pattern)
}
