package netguard

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/wasm-operator/wasm-operator/internal/netguard/netguardtest"
)

func TestPrivate(t *testing.T) {
	private := []string{
		"127.0.0.1", "127.1.2.3", "::1", "10.0.0.1", "10.96.0.1", "172.16.5.4", "192.168.1.1",
		"169.254.169.254", "fe80::1", "fd00::1", "fc00::1", "0.0.0.0", "::", "100.64.0.1", "224.0.0.1",
		"255.255.255.255", "fd00:ec2::254", "fec0::1",
		// IPv4 embedded in IPv6: each of these reaches 127.0.0.1 or 10.0.0.1 somewhere.
		"::ffff:127.0.0.1", "::ffff:10.0.0.1", // mapped
		"::127.0.0.1", "::7f00:1", "::a00:1", // compatible, the [::127.0.0.1] of the issue
		"::ffff:0:7f00:1", "::ffff:0:a00:1", // translated, the [::ffff:0:7f00:1] of the issue
		"64:ff9b::7f00:1", "64:ff9b::a00:1", // NAT64
		"2002:7f00:1::1", "2002:a00:1::1", // 6to4
		"2001:0:4136:e378:8000:63bf:3fff:fdd2", // Teredo
		"64:ff9b:1::808:808",                   // local-use NAT64
		"100::1", "2001:db8::1",                // discard, documentation
		"4000::1", "::2:3:4:5:6", // outside global unicast
	}
	for _, a := range private {
		if !Private(netip.MustParseAddr(a)) {
			t.Errorf("Private(%s) = false, want true", a)
		}
	}
	for _, a := range []string{"93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "64:ff9b::808:808", "2002:808:808::1", "::ffff:8.8.8.8"} {
		if Private(netip.MustParseAddr(a)) {
			t.Errorf("Private(%s) = true for a public address", a)
		}
	}
}

func TestLocal(t *testing.T) {
	for _, a := range []string{"127.0.0.1", "::1", "::", "0.0.0.0", "169.254.169.254", "fe80::1", "224.0.0.1",
		"::127.0.0.1", "::ffff:0:7f00:1", "::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe", "2002:7f00:1::1"} {
		if !Local(netip.MustParseAddr(a)) {
			t.Errorf("Local(%s) = false, want true", a)
		}
	}
	for _, a := range []string{"10.0.0.1", "192.168.1.1", "fd00::1", "8.8.8.8", "2606:4700:4700::1111"} {
		if Local(netip.MustParseAddr(a)) {
			t.Errorf("Local(%s) = true, want false", a)
		}
	}
	if !Local(netip.Addr{}) {
		t.Error("the zero address is not local")
	}
}

func TestAbsoluteAddr(t *testing.T) {
	for in, want := range map[string]string{
		"redis.ns:6379":           "redis.ns.:6379",
		"kubernetes.default:443":  "kubernetes.default.:443",
		"example.com.:80":         "example.com.:80",
		"10.0.0.1:80":             "10.0.0.1:80",
		"[::1]:80":                "[::1]:80",
		"[fe80::1%eth0]:80":       "[fe80::1%eth0]:80",
		"not an address":          "not an address",
		"api.example.com:8443":    "api.example.com.:8443",
		"localhost:8080":          "localhost.:8080",
		":80":                     ":80",
		"UPPER.example.COM:80":    "UPPER.example.COM.:80",
		"xn--bcher-kva.example:1": "xn--bcher-kva.example.:1",
	} {
		if got := AbsoluteAddr(in); got != want {
			t.Errorf("AbsoluteAddr(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestDialerChecksResolvedAddress: a public-looking name that resolves to loopback is refused at
// connect time, and the name is looked up as written, never with a search domain appended.
func TestDialerChecksResolvedAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	resolver, asked := netguardtest.DNS(t, [4]byte{127, 0, 0, 1})

	refuse := &Dialer{Dialer: net.Dialer{Timeout: 5 * time.Second, Resolver: resolver}, Check: func(ap netip.AddrPort) error {
		if Private(ap.Addr()) {
			return ErrPrivate
		}
		return nil
	}}
	ctx := context.Background()
	for _, name := range []string{"rebind.example.net", "redis.ns"} {
		_, err := refuse.DialContext(ctx, "tcp4", net.JoinHostPort(name, port))
		if !errors.Is(err, ErrPrivate) {
			t.Errorf("dial %s: %v, want %v", name, err, ErrPrivate)
		}
	}
	for _, n := range asked() {
		if n != "rebind.example.net." && n != "redis.ns." {
			t.Errorf("resolver was asked %q: a search domain was applied", n)
		}
	}
	if len(asked()) == 0 {
		t.Fatal("the resolver was never asked")
	}

	allow := &Dialer{Dialer: net.Dialer{Timeout: 5 * time.Second, Resolver: resolver}}
	c, err := allow.DialContext(ctx, "tcp4", net.JoinHostPort("rebind.example.net", port))
	if err != nil {
		t.Fatalf("without Check the dial fails: %v", err)
	}
	c.Close()
	if _, err := refuse.DialContext(ctx, "tcp", ln.Addr().String()); err == nil || !strings.Contains(err.Error(), ErrPrivate.Error()) {
		t.Fatalf("dial a loopback literal: %v", err)
	}
}

func TestGlob(t *testing.T) {
	cases := []struct {
		pattern, host string
		want          bool
	}{
		{"api.example.com", "api.example.com", true},
		{"api.example.com", "api.example.org", false},
		{"*.example.org", "a.example.org", true},
		{"*.example.org", "a.b.example.org", true},
		{"*.example.org", "example.org", false},
		{"*.example.org", "example.org.evil.com", false},
		{"*.example.org", "evil-example.org", false},
		{"jsonplaceholder.*.com", "jsonplaceholder.typicode.com", true},
		{"google.*", "google.com", true},
		{"google.*", "jsonplaceholder.typicode.com", false},
		{"api?.example.com", "api1.example.com", true},
		{"*", "anything.at.all", true},
	}
	for _, c := range cases {
		if got := Glob(c.pattern, c.host); got != c.want {
			t.Errorf("Glob(%q, %q) = %v, want %v", c.pattern, c.host, got, c.want)
		}
	}
}
