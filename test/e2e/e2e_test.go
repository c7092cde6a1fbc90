// Package e2e runs the operator as its users do: the manager's subcommands as real processes against a real
// kube-apiserver, two hosts standing for two nodes on one shared cache folder, plugins built from
// examples/plugins, and calls over HTTPS with real ServiceAccount tokens of the hosts' audience.
package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wasmv1 "github.com/wasm-operator/wasm-operator/api/v1alpha1"
	"github.com/wasm-operator/wasm-operator/internal/devstack"
	"github.com/wasm-operator/wasm-operator/internal/hostapi"
	"github.com/wasm-operator/wasm-operator/internal/hostcerts"
	"github.com/wasm-operator/wasm-operator/internal/testplugins"
)

const wait = 90 * time.Second

type node struct {
	name string
	addr string
	proc *devstack.Process
}

// TestLifecycle runs the lifecycle with the processes as cluster admins.
func TestLifecycle(t *testing.T) { lifecycle(t, nil) }

// lifecycle runs a user's whole story with the operator. setup, when set, prepares the stack before any
// manager process starts.
func lifecycle(t *testing.T, setup func(*testing.T, *devstack.Stack)) {
	ctx := context.Background()
	s, _ := startStack(t, "controller", "host-node-a", "host-node-b")
	var err error
	if setup != nil {
		setup(t, s)
	}
	if _, err := s.StartController(); err != nil {
		t.Fatal(err)
	}
	nodes := map[string]*node{}
	startHost := func(name string) {
		t.Helper()
		n := nodes[name]
		if n == nil {
			addr, err := devstack.FreePort()
			if err != nil {
				t.Fatal(err)
			}
			n = &node{name: name, addr: addr}
			nodes[name] = n
		}
		if n.proc, err = s.StartHost(name, n.addr, "--lease-duration=4s"); err != nil {
			t.Fatal(err)
		}
	}
	for name, zone := range map[string]string{"node-a": "a", "node-b": "b"} {
		if err := s.AddNode(ctx, name, map[string]string{"zone": zone}); err != nil {
			t.Fatal(err)
		}
		startHost(name)
	}

	// Callers: one ServiceAccount bound to the caller role in default, one without.
	kube := kubernetes.NewForConfigOrDie(s.Config)
	allowed, denied := serviceAccountToken(t, s, kube, "caller", true), serviceAccountToken(t, s, kube, "stranger", false)
	// The allowed caller's tokens for the API server and for another service: useless against a host.
	apiServerToken, otherAudience := tokenFor(t, kube, "caller"), tokenFor(t, kube, "caller", "vault")
	scraper := metricsToken(t, s, kube)

	greet := readPlugin(t, s, "greet")
	v2 := testplugins.WithCustomSection(greet, "release", "v2") // same code, another digest
	srv := newFileServer(t, map[string][]byte{"/greet.wasm": greet, "/greet-v2.wasm": v2, "/broken.wasm": []byte("not wasm")})

	plugin := &wasmv1.WasmPlugin{ObjectMeta: metav1.ObjectMeta{Name: "greet", Namespace: "default"},
		Spec: wasmv1.WasmPluginSpec{
			Source: wasmv1.Source{HTTP: &wasmv1.HTTPSource{URL: srv.URL + "/greet.wasm"}},
			Config: map[string]string{"greeting": "Hi"},
		}}
	if err := s.Client.Create(ctx, plugin); err != nil {
		t.Fatal(err)
	}
	p := waitPlugin(t, s, "greet", "Ready on both nodes", func(p *wasmv1.WasmPlugin) bool {
		return isReady(p) && p.Status.ReadyNodes == 2 && p.Status.TargetNodes == 2
	})
	first := p.Status.Artifact.Digest

	t.Run("each host serves a certificate callers trust", func(t *testing.T) {
		want := map[string]string{}
		for _, n := range nodes {
			var cn string
			eventually(t, wait, func() (bool, string) {
				var err error
				cn, err = servingName(n.addr)
				return err == nil, fmt.Sprintf("%s: GET /readyz: %v", n.name, err)
			})
			want[n.name] = cn
		}
		// With the chart's signer, each host has its own certificate, its node in the subject.
		if signed := s.HostSigned(); signed {
			for name, cn := range want {
				if cn != hostcerts.CommonName(name) {
					t.Fatalf("the host of %s serves a certificate of %q, want its own (%q)", name, cn, hostcerts.CommonName(name))
				}
			}
		}
	})

	t.Run("calls with and without permission", func(t *testing.T) {
		for _, n := range nodes {
			for _, c := range []struct {
				token string
				want  int
			}{{allowed, 200}, {denied, 403}, {"", 401}, {apiServerToken, 401}, {otherAudience, 401}} {
				code, body := call(t, n.addr, "greet", "greet", c.token, "world")
				if code != c.want {
					t.Fatalf("%s: token %q...: status %d (%s), want %d", n.name, prefix(c.token), code, body, c.want)
				}
				if code == 200 && body != "Hi, world!" {
					t.Fatalf("%s: body %q, want %q", n.name, body, "Hi, world!")
				}
			}
		}
	})

	t.Run("replace the module under load", func(t *testing.T) {
		var (
			calls, failures atomic.Int64
			lastFailure     atomic.Value
			stop            = make(chan struct{})
			wg              sync.WaitGroup
		)
		for _, n := range nodes {
			for range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						select {
						case <-stop:
							return
						default:
						}
						code, body := call(t, n.addr, "greet", "greet", allowed, "load")
						calls.Add(1)
						if code != 200 || body != "Hi, load!" {
							failures.Add(1)
							lastFailure.Store(fmt.Sprintf("%s: %d %s", n.name, code, body))
						}
					}
				}()
			}
		}
		update(t, s, "greet", func(p *wasmv1.WasmPlugin) { p.Spec.Source.HTTP.URL = srv.URL + "/greet-v2.wasm" })
		waitPlugin(t, s, "greet", "both nodes serve v2", func(p *wasmv1.WasmPlugin) bool {
			return isReady(p) && p.Status.Artifact.Digest == digest(v2) && p.Status.ReadyNodes == 2
		})
		// Keep the load on a little past the swap, until each node served more calls on the new version.
		before := calls.Load()
		for calls.Load() < before+50 {
			time.Sleep(10 * time.Millisecond)
		}
		close(stop)
		wg.Wait()
		if n := failures.Load(); n > 0 {
			t.Fatalf("%d of %d calls failed during the replacement; last: %v", n, calls.Load(), lastFailure.Load())
		}
		t.Logf("%d calls, none failed, while the module was replaced", calls.Load())
	})

	t.Run("a broken version leaves the last good one serving", func(t *testing.T) {
		update(t, s, "greet", func(p *wasmv1.WasmPlugin) { p.Spec.Source.HTTP.URL = srv.URL + "/broken.wasm" })
		p := waitPlugin(t, s, "greet", "Stalled InvalidModule", func(p *wasmv1.WasmPlugin) bool {
			c := meta.FindStatusCondition(p.Status.Conditions, wasmv1.ConditionStalled)
			return c != nil && c.Reason == wasmv1.ReasonInvalidModule && p.Status.ObservedGeneration == p.Generation
		})
		if msg := meta.FindStatusCondition(p.Status.Conditions, wasmv1.ConditionReady).Message; !strings.Contains(msg, "not a WebAssembly module") {
			t.Fatalf("Ready message %q does not say why", msg)
		}
		for _, n := range nodes {
			if code, body := call(t, n.addr, "greet", "greet", allowed, "still"); code != 200 || body != "Hi, still!" {
				t.Fatalf("%s stopped serving the last good version: %d %s", n.name, code, body)
			}
		}
		update(t, s, "greet", func(p *wasmv1.WasmPlugin) { p.Spec.Source.HTTP.URL = srv.URL + "/greet.wasm" })
		waitPlugin(t, s, "greet", "back on v1", func(p *wasmv1.WasmPlugin) bool {
			return isReady(p) && p.Status.Artifact.Digest == first && p.Status.ReadyNodes == 2
		})
	})

	t.Run("config changes without a restart", func(t *testing.T) {
		update(t, s, "greet", func(p *wasmv1.WasmPlugin) { p.Spec.Config["greeting"] = "Howdy" })
		for _, n := range nodes {
			eventually(t, wait, func() (bool, string) {
				code, body := call(t, n.addr, "greet", "greet", allowed, "there")
				return code == 200 && body == "Howdy, there!", fmt.Sprintf("%s: %d %s", n.name, code, body)
			})
		}
	})

	t.Run("placement on node-a only", func(t *testing.T) {
		update(t, s, "greet", func(p *wasmv1.WasmPlugin) {
			p.Spec.Placement = &wasmv1.Placement{NodeSelector: map[string]string{"zone": "a"}}
		})
		waitPlugin(t, s, "greet", "1/1 on node-a", func(p *wasmv1.WasmPlugin) bool {
			return isReady(p) && p.Status.TargetNodes == 1 && p.Status.ReadyNodes == 1 && p.Status.NotReadyCount == 0
		})
		waitHost(t, s, "node-b", "greet unloaded from node-b's report", func(h *wasmv1.WasmHost) bool {
			return entry(h, "greet") == nil
		})
		if code, body := call(t, nodes["node-b"].addr, "greet", "greet", allowed, "x"); code != 404 {
			t.Fatalf("node-b still serves after placement moved: %d %s", code, body)
		}
		update(t, s, "greet", func(p *wasmv1.WasmPlugin) { p.Spec.Placement = nil })
		waitPlugin(t, s, "greet", "back on both nodes", func(p *wasmv1.WasmPlugin) bool {
			return isReady(p) && p.Status.ReadyNodes == 2 && p.Status.TargetNodes == 2
		})
	})

	t.Run("a lost host leaves the target set; restarted, it loads from the cache", func(t *testing.T) {
		compiled := countFiles(t, filepath.Join(s.CacheDir, "compiled"))
		nodes["node-b"].proc.Kill() // no clean shutdown: only Lease expiry tells
		p := waitPlugin(t, s, "greet", "node-b dropped after its Lease expired", func(p *wasmv1.WasmPlugin) bool {
			return p.Status.TargetNodes == 1 && p.Status.UpdatedNodes == 1
		})
		if !isReady(p) || p.Status.NodeSummary != "1/1" {
			t.Fatalf("Ready not truthful with node-a serving: %s", p.Status.NodeSummary)
		}
		startHost("node-b")
		waitPlugin(t, s, "greet", "node-b back", func(p *wasmv1.WasmPlugin) bool {
			return isReady(p) && p.Status.ReadyNodes == 2 && p.Status.TargetNodes == 2
		})
		if code, body := call(t, nodes["node-b"].addr, "greet", "greet", allowed, "again"); code != 200 {
			t.Fatalf("restarted node-b: %d %s", code, body)
		}
		if after := countFiles(t, filepath.Join(s.CacheDir, "compiled")); after != compiled {
			t.Fatalf("compiled cache went from %d to %d files: the restarted host compiled cold", compiled, after)
		}
		if code, _ := getMetrics(t, nodes["node-b"].addr, ""); code != http.StatusUnauthorized {
			t.Fatalf("metrics without a token: %d, want 401", code)
		}
		_, m := getMetrics(t, nodes["node-b"].addr, scraper)
		if !strings.Contains(m, `wasm_operator_host_compile_duration_seconds_count{name="greet",namespace="default"} 1`) {
			t.Fatalf("restarted host's metrics show no compile of greet:\n%s", grep(m, "compile_duration"))
		}
	})

	t.Run("a clean shutdown releases the node at once", func(t *testing.T) {
		if err := nodes["node-b"].proc.Stop(30 * time.Second); err != nil {
			t.Fatalf("node-b did not stop cleanly: %v", err)
		}
		// On the way out the host cleared its report and deleted its Lease: nothing waits for expiry.
		var lease coordinationv1.Lease
		err := s.Client.Get(ctx, client.ObjectKey{Namespace: devstack.Namespace, Name: "wasm-host-node-b"}, &lease)
		if !apierrors.IsNotFound(err) {
			t.Fatalf("node-b's Lease is still there after a clean shutdown: %v", err)
		}
		var h wasmv1.WasmHost
		if err := s.Client.Get(ctx, client.ObjectKey{Name: "node-b"}, &h); err != nil {
			t.Fatal(err)
		}
		if h.Status.PluginCount != 0 || h.Status.Holder != "" {
			t.Fatalf("node-b's report is still there after a clean shutdown: %+v", h.Status)
		}
		waitPlugin(t, s, "greet", "target set without node-b", func(p *wasmv1.WasmPlugin) bool {
			return isReady(p) && p.Status.TargetNodes == 1
		})
	})
}

// startStack starts the test control plane in a temporary folder, which it returns, and stops it when
// the test ends, logging the named processes' logs if the test failed.
func startStack(t *testing.T, logs ...string) (*devstack.Stack, string) {
	t.Helper()
	dir := t.TempDir()
	s, err := devstack.Start(context.Background(), devstack.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	// Callers trust the CA of this stack's hosts, as pods do with the chart's CA ConfigMap.
	httpClient = s.HostClient()
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			for _, n := range logs {
				b, _ := os.ReadFile(s.LogPath(n))
				t.Logf("---- %s log (last 4 KiB) ----\n%s", n, tail(b, 4096))
			}
		}
	})
	return s, dir
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

func prefix(s string) string {
	if len(s) > 8 {
		return s[:8]
	}
	return s
}

func grep(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

var httpClient = &http.Client{Timeout: 30 * time.Second}

func call(t *testing.T, addr, plugin, function, token, input string) (int, string) {
	req, err := http.NewRequest(http.MethodPost,
		fmt.Sprintf("https://%s/v1/namespaces/default/wasmplugins/%s/call/%s", addr, plugin, function), strings.NewReader(input))
	if err != nil {
		t.Error(err)
		return 0, err.Error()
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// servingName is the subject of the certificate a host serves, once it verifies and /readyz says ok.
func servingName(addr string) (string, error) {
	resp, err := httpClient.Get("https://" + addr + "/readyz")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%d %s", resp.StatusCode, b)
	}
	return resp.TLS.PeerCertificates[0].Subject.CommonName, nil
}

// getMetrics reads a host's /metrics with a bearer token (none when empty); status 0 and the error when
// the host does not answer.
func getMetrics(t *testing.T, addr, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "https://"+addr+"/metrics", nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		// Status 0: a host restarted by the test may not listen yet; callers that wait ask again.
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metricsToken is the token of a ServiceAccount bound to the metrics reader role, as Prometheus has.
func metricsToken(t *testing.T, s *devstack.Stack, kube kubernetes.Interface) string {
	t.Helper()
	ctx := context.Background()
	if err := s.Client.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "prometheus", Namespace: "default"}}); err != nil {
		t.Fatal(err)
	}
	crb := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "prometheus-reads-wasm-metrics"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "wasm-operator-metrics-reader"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "prometheus", Namespace: "default"}}}
	if err := s.Client.Create(ctx, crb); err != nil {
		t.Fatal(err)
	}
	tr, err := kube.CoreV1().ServiceAccounts("default").CreateToken(ctx, "prometheus",
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To(int64(3600))}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

func serviceAccountToken(t *testing.T, s *devstack.Stack, kube kubernetes.Interface, name string, bind bool) string {
	t.Helper()
	ctx := context.Background()
	if err := s.Client.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}}); err != nil {
		t.Fatal(err)
	}
	if bind {
		rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name + "-calls", Namespace: "default"},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "wasm-operator-caller"},
			Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: "default"}}}
		if err := s.Client.Create(ctx, rb); err != nil {
			t.Fatal(err)
		}
	}
	return tokenFor(t, kube, name, hostapi.DefaultAudience)
}

// tokenFor returns a token of ServiceAccount default/name for audiences (none: the API server's), as a
// projected serviceAccountToken volume holds.
func tokenFor(t *testing.T, kube kubernetes.Interface, name string, audiences ...string) string {
	t.Helper()
	tr, err := kube.CoreV1().ServiceAccounts("default").CreateToken(context.Background(), name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To(int64(3600)), Audiences: audiences}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token for %s: %v", name, err)
	}
	return tr.Status.Token
}

func readPlugin(t *testing.T, s *devstack.Stack, name string) []byte {
	t.Helper()
	resp, err := httpClient.Get(s.PluginsURL + "/" + name + ".wasm")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("read plugin %s: %d %v", name, resp.StatusCode, err)
	}
	return b
}

func update(t *testing.T, s *devstack.Stack, name string, change func(*wasmv1.WasmPlugin)) {
	t.Helper()
	eventually(t, wait, func() (bool, string) {
		var p wasmv1.WasmPlugin
		if err := s.Client.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: name}, &p); err != nil {
			return false, err.Error()
		}
		change(&p)
		if err := s.Client.Update(context.Background(), &p); err != nil {
			return false, err.Error() // a conflict with a status write: read again
		}
		return true, ""
	})
}

func isReady(p *wasmv1.WasmPlugin) bool {
	c := meta.FindStatusCondition(p.Status.Conditions, wasmv1.ConditionReady)
	return c != nil && c.Status == metav1.ConditionTrue && c.ObservedGeneration == p.Generation &&
		p.Status.ObservedGeneration == p.Generation
}

func waitPlugin(t *testing.T, s *devstack.Stack, name, what string, cond func(*wasmv1.WasmPlugin) bool) *wasmv1.WasmPlugin {
	t.Helper()
	var p wasmv1.WasmPlugin
	eventually(t, wait, func() (bool, string) {
		if err := s.Client.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: name}, &p); err != nil {
			return false, err.Error()
		}
		msg := ""
		if c := meta.FindStatusCondition(p.Status.Conditions, wasmv1.ConditionReady); c != nil {
			msg = string(c.Status) + " " + c.Reason + ": " + c.Message
		}
		return cond(&p), fmt.Sprintf("%s: Ready=%s nodes=%s not ready=%+v", what, msg, p.Status.NodeSummary, p.Status.NotReadyNodes)
	})
	return &p
}

// waitHost waits until node's WasmHost satisfies cond.
func waitHost(t *testing.T, s *devstack.Stack, node, what string, cond func(*wasmv1.WasmHost) bool) *wasmv1.WasmHost {
	t.Helper()
	var h wasmv1.WasmHost
	eventually(t, wait, func() (bool, string) {
		if err := s.Client.Get(context.Background(), client.ObjectKey{Name: node}, &h); err != nil {
			return false, err.Error()
		}
		return cond(&h), fmt.Sprintf("%s: holder %q, plugins %+v", what, h.Status.Holder, h.Status.Plugins)
	})
	return &h
}

// entry is the report of plugin default/name in h, or nil.
func entry(h *wasmv1.WasmHost, name string) *wasmv1.HostPlugin {
	for i, p := range h.Status.Plugins {
		if p.Namespace == "default" && p.Name == name {
			return &h.Status.Plugins[i]
		}
	}
	return nil
}

func eventually(t *testing.T, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, msg := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not true after %s: %s", timeout, msg)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func countFiles(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func newFileServer(t *testing.T, files map[string][]byte) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write(b)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}
