package runtime

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/wasm-operator/wasm-operator/internal/netguard"
	"github.com/wasm-operator/wasm-operator/internal/netguard/netguardtest"
	"github.com/wasm-operator/wasm-operator/internal/testplugins"
)

func TestPrivateAddr(t *testing.T) {
	for _, a := range []string{"127.0.0.1", "127.1.2.3", "::1", "10.0.0.1", "10.96.0.1", "172.16.5.4", "192.168.1.1",
		"169.254.169.254", "fe80::1", "fd00::1", "fc00::1", "0.0.0.0", "::", "100.64.0.1", "224.0.0.1", "255.255.255.255",
		"::ffff:127.0.0.1", "::ffff:10.0.0.1", "64:ff9b::a00:1", "2002:a00:1::1", "fd00:ec2::254"} {
		if !privateAddr(netip.MustParseAddr(a)) {
			t.Errorf("%s is not refused", a)
		}
	}
	for _, a := range []string{"93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "64:ff9b::808:808"} {
		if privateAddr(netip.MustParseAddr(a)) {
			t.Errorf("public %s is refused", a)
		}
	}
}

// fakeDNS answers every A query with 127.0.0.1, like a public name an attacker points at the host.
func fakeDNS(t *testing.T) *net.Resolver {
	r, _ := netguardtest.DNS(t, [4]byte{127, 0, 0, 1})
	return r
}

// fetchPlugin loads the http-fetch example with the given HTTP permission; resolver and exempt
// stand in for public DNS and a public server in tests.
func fetchPlugin(t *testing.T, e *Engine, perm HTTP, resolver *net.Resolver, exempt func(netip.AddrPort) bool) *Instance {
	t.Helper()
	p := loadFile(t, e, testplugins.Build(t, "http-fetch"), PluginConfig{
		Name: "fetch", Permissions: Permissions{HTTP: &perm, Log: &Log{Level: LogOff}}, Limits: Limits{CallTimeout: 10 * time.Second}})
	p.http.exempt = exempt
	if resolver != nil {
		d := &netguard.Dialer{Dialer: net.Dialer{Timeout: 5 * time.Second, Resolver: resolver, Control: p.http.control}}
		p.http.client.Transport.(*http.Transport).DialContext = d.DialContext
	}
	return newInstance(t, p)
}

// TestSSRF: requests to private and cluster-internal addresses are refused unless
// allowPrivateNetworks, whether named directly, through DNS, or reached by a redirect.
func TestSSRF(t *testing.T) {
	ctx := context.Background()
	e := newTestEngine(t)
	private := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "secret")
	}))
	t.Cleanup(private.Close)
	privURL, _ := url.Parse(private.URL)
	privPort := privURL.Port()

	// "public" stands for a server on the internet that redirects to internal addresses.
	public, pubAddr := netguardtest.Redirector(t, map[string]string{
		"/to-loopback":       private.URL + "/",
		"/to-private-ip":     "http://10.0.0.1/",
		"/to-metadata":       "http://169.254.169.254/latest/meta-data/",
		"/to-rebinding-name": "http://rebind.example.net:" + privPort + "/",
		"/to-cluster-name":   "http://kubernetes.default.svc.cluster.local/",
	}, "public")
	isPublic := func(ap netip.AddrPort) bool { return ap == pubAddr }
	resolver := fakeDNS(t)

	inst := fetchPlugin(t, e, HTTP{AllowedHosts: []string{"*"}}, resolver, isPublic)
	if out, rc, err := inst.Call(ctx, "fetch", []byte(public.URL+"/ok")); err != nil || rc != 0 || string(out) != "public" {
		t.Fatalf("the stand-in public server is not reachable: %q %d %v", out, rc, err)
	}
	cases := []struct{ name, url, want string }{
		{"loopback literal", private.URL, "127.0.0.1: private or cluster-internal address"},
		{"loopback v6", "http://[::1]:" + privPort + "/", "::1: private or cluster-internal address"},
		{"localhost", "http://localhost:" + privPort + "/", "localhost: private or cluster-internal address"},
		{"metadata", "http://169.254.169.254/latest/meta-data/", "169.254.169.254: private or cluster-internal address"},
		{"cluster service name", "http://kubernetes.default.svc/", "kubernetes.default.svc: private or cluster-internal address"},
		{"cluster dns name", "http://api.ns.svc.cluster.local/", "private or cluster-internal address"},
		{"compatible v6 loopback", "http://[::127.0.0.1]:" + privPort + "/", "::127.0.0.1: private or cluster-internal address"},
		{"translated v6 loopback", "http://[::ffff:0:7f00:1]:" + privPort + "/", "::ffff:0:7f00:1: private or cluster-internal address"},
		{"nat64 loopback", "http://[64:ff9b::7f00:1]:" + privPort + "/", "64:ff9b::7f00:1: private or cluster-internal address"},
		{"name resolving to loopback", "http://rebind.example.net:" + privPort + "/",
			"connect to 127.0.0.1:" + privPort + " refused: private or cluster-internal address"},
		{"redirect to loopback", public.URL + "/to-loopback", "redirect to '" + private.URL + "/' refused"},
		{"redirect to private ip", public.URL + "/to-private-ip", "redirect to 'http://10.0.0.1/' refused"},
		{"redirect to metadata", public.URL + "/to-metadata", "redirect to 'http://169.254.169.254/latest/meta-data/' refused"},
		{"redirect to rebinding name", public.URL + "/to-rebinding-name", "connect to 127.0.0.1:" + privPort + " refused"},
		{"redirect to cluster name", public.URL + "/to-cluster-name", "redirect to 'http://kubernetes.default.svc.cluster.local/' refused"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			inst := fetchPlugin(t, e, HTTP{AllowedHosts: []string{"*"}}, resolver, isPublic)
			out, rc, err := inst.Call(ctx, "fetch", []byte(c.url))
			if err == nil || rc != 1 || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %q, rc %d, err %v; want an error containing %q", out, rc, err, c.want)
			}
			if strings.Contains(string(out), "secret") {
				t.Fatal("the private server answered")
			}
		})
	}

	t.Run("allowPrivateNetworks", func(t *testing.T) {
		inst := fetchPlugin(t, e, HTTP{AllowedHosts: []string{"127.0.0.1", "rebind.example.net"}, AllowPrivateNetworks: true}, resolver, nil)
		for _, u := range []string{private.URL, "http://rebind.example.net:" + privPort + "/"} {
			if out, rc, err := inst.Call(ctx, "fetch", []byte(u)); err != nil || rc != 0 || string(out) != "secret" {
				t.Errorf("%s: %q %d %v", u, out, rc, err)
			}
		}
	})
	t.Run("host not allowed", func(t *testing.T) {
		inst := fetchPlugin(t, e, HTTP{AllowedHosts: []string{"*.example.org"}, AllowPrivateNetworks: true}, resolver, nil)
		_, rc, err := inst.Call(ctx, "fetch", []byte(private.URL))
		if rc != 1 || err == nil || !strings.Contains(err.Error(), "HTTP request to '"+private.URL+"' is not allowed: host 127.0.0.1 is not in permissions.http.allowedHosts") {
			t.Fatalf("rc %d, err %v", rc, err)
		}
	})
}

func TestHTTPLimits(t *testing.T) {
	ctx := context.Background()
	e := newTestEngine(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/big":
			fmt.Fprint(w, strings.Repeat("x", 2048))
		case "/slow":
			select {
			case <-r.Context().Done():
			case <-time.After(10 * time.Second):
			}
		}
	}))
	t.Cleanup(srv.Close)
	perm := HTTP{AllowedHosts: []string{"127.0.0.1"}, AllowPrivateNetworks: true, MaxResponseBytes: 1024, Timeout: 200 * time.Millisecond}

	inst := fetchPlugin(t, e, perm, nil, nil)
	_, rc, err := inst.Call(ctx, "fetch", []byte(srv.URL+"/big"))
	if rc != 1 || err == nil || !strings.Contains(err.Error(), "response body over the limit of 1024 bytes (permissions.http.maxResponseBytes)") {
		t.Errorf("big: rc %d, err %v", rc, err)
	}
	inst = fetchPlugin(t, e, perm, nil, nil)
	start := time.Now()
	_, rc, err = inst.Call(ctx, "fetch", []byte(srv.URL+"/slow"))
	if rc != 1 || err == nil || !strings.Contains(err.Error(), "context deadline exceeded") || time.Since(start) > 5*time.Second {
		t.Errorf("slow: rc %d, err %v after %v", rc, err, time.Since(start))
	}
}
