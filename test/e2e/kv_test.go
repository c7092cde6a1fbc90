package e2e

import (
	"context"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	wasmv1 "github.com/wasm-operator/wasm-operator/api/v1alpha1"
	"github.com/wasm-operator/wasm-operator/internal/devstack"
	"github.com/wasm-operator/wasm-operator/internal/kv/redistest"
)

// TestKV: two hosts as processes on one Redis. A Node-scope counter is shared by the calls on one node and
// apart on the other; a Cluster-scope counter is shared by both nodes; a plugin importing the kv functions
// without permissions.kv is Stalled with the permission named.
func TestKV(t *testing.T) {
	ctx := context.Background()
	redisAddr := redistest.Start(t)
	s, _ := startStack(t, "controller", "host-node-a", "host-node-b")
	if _, err := s.StartController(); err != nil {
		t.Fatal(err)
	}
	addrs := map[string]string{}
	for _, name := range []string{"node-a", "node-b"} {
		if err := s.AddNode(ctx, name, nil); err != nil {
			t.Fatal(err)
		}
		addr, err := devstack.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		addrs[name] = addr
		if _, err := s.StartHost(name, addr, "--lease-duration=4s", "--kv-redis-address="+redisAddr); err != nil {
			t.Fatal(err)
		}
	}
	token := serviceAccountToken(t, s, kubernetes.NewForConfigOrDie(s.Config), "kv-caller", true)

	one := int32(1)
	create := func(name string, perms *wasmv1.Permissions) {
		t.Helper()
		p := &wasmv1.WasmPlugin{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
			Spec: wasmv1.WasmPluginSpec{
				Source:      wasmv1.Source{HTTP: &wasmv1.HTTPSource{URL: s.PluginsURL + "/shared-counter.wasm"}},
				Permissions: perms,
				Pool:        &wasmv1.PoolSpec{MaxUses: &one}, // every call on a new instance
			}}
		if err := s.Client.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	create("node-counter", &wasmv1.Permissions{KV: &wasmv1.KVPermission{}})
	create("cluster-counter", &wasmv1.Permissions{KV: &wasmv1.KVPermission{Scope: wasmv1.KVScopeCluster}})
	create("no-kv", nil)
	for _, name := range []string{"node-counter", "cluster-counter"} {
		waitPlugin(t, s, name, "Ready on both nodes", func(p *wasmv1.WasmPlugin) bool {
			return isReady(p) && p.Status.ReadyNodes == 2
		})
	}

	increment := func(node, plugin, want string) {
		t.Helper()
		if code, body := call(t, addrs[node], plugin, "increment", token, ""); code != 200 || body != want {
			t.Fatalf("%s on %s: %d %q, want %q", plugin, node, code, body, want)
		}
	}
	increment("node-a", "node-counter", "1")
	increment("node-a", "node-counter", "2")
	increment("node-b", "node-counter", "1")
	increment("node-a", "cluster-counter", "1")
	increment("node-b", "cluster-counter", "2")
	increment("node-a", "cluster-counter", "3")

	p := waitPlugin(t, s, "no-kv", "Stalled PermissionDenied", func(p *wasmv1.WasmPlugin) bool {
		c := meta.FindStatusCondition(p.Status.Conditions, wasmv1.ConditionStalled)
		return c != nil && c.Reason == wasmv1.ReasonPermissionDenied
	})
	if msg := meta.FindStatusCondition(p.Status.Conditions, wasmv1.ConditionStalled).Message; !strings.Contains(msg, "import extism:host/user.kv_get needs permissions.kv") {
		t.Fatalf("Stalled message %q does not name the permission", msg)
	}
}
