package host

import (
	"context"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/types"

	wasmv1 "github.com/wasm-operator/wasm-operator/api/v1alpha1"
	"github.com/wasm-operator/wasm-operator/internal/kv"
	"github.com/wasm-operator/wasm-operator/internal/kv/redistest"
)

func (tb *table) call(t *testing.T, name, function, input, want string) {
	t.Helper()
	out, err := tb.Invoke(context.Background(), "default", name, function, []byte(input))
	if err != nil || string(out) != want {
		t.Fatalf("%s.%s(%q) = %q, %v; want %q", name, function, input, out, err, want)
	}
}

// kvSpec grants kv and recycles every instance after one call, so that each call runs on another instance.
func kvSpec(perm *wasmv1.KVPermission) wasmv1.WasmPluginSpec {
	one := int32(1)
	return wasmv1.WasmPluginSpec{Permissions: &wasmv1.Permissions{KV: perm}, Pool: &wasmv1.PoolSpec{MaxUses: &one}}
}

// TestKVNodeScope: on one host, a value set through one call is read by another call on another instance,
// and by a new version of the plugin; unloading the plugin drops its store.
func TestKVNodeScope(t *testing.T) {
	tb := newTable(t, "shared-counter")
	d := tb.digests["shared-counter"]
	spec := kvSpec(&wasmv1.KVPermission{})
	tb.ensure(t, newObj("c", d, spec))
	tb.call(t, "c", "increment", "", "1")
	tb.call(t, "c", "increment", "", "2")
	tb.call(t, "c", "get", "", "2")

	spec.Config = map[string]string{"new": "version"}
	tb.ensure(t, newObj("c", d, spec))
	tb.call(t, "c", "get", "", "2")

	tb.ensure(t, newObj("other", d, kvSpec(&wasmv1.KVPermission{})))
	tb.call(t, "other", "get", "", "0")

	tb.Unload(types.NamespacedName{Namespace: "default", Name: "c"})
	tb.ensure(t, newObj("c", d, spec))
	tb.call(t, "c", "get", "", "0")
}

// TestKVClusterScope: two hosts on one Redis share a plugin's entries.
func TestKVClusterScope(t *testing.T) {
	addr := redistest.Start(t)
	hosts := make([]*table, 2)
	for i := range hosts {
		hosts[i] = newTable(t, "shared-counter")
		r, err := kv.NewRedis(kv.RedisOptions{Address: addr})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		hosts[i].KVRedis = r
		hosts[i].ensure(t, newObj("c", hosts[i].digests["shared-counter"], kvSpec(&wasmv1.KVPermission{Scope: wasmv1.KVScopeCluster})))
	}
	hosts[0].call(t, "c", "increment", "", "1")
	hosts[1].call(t, "c", "increment", "", "2")
	hosts[0].call(t, "c", "get", "", "2")
}

func TestKVLoadFailures(t *testing.T) {
	tb := newTable(t, "shared-counter")
	d := tb.digests["shared-counter"]
	for _, c := range []struct {
		name string
		spec wasmv1.WasmPluginSpec
		want string
	}{
		{"not granted", wasmv1.WasmPluginSpec{}, "import extism:host/user.kv_get needs permissions.kv"},
		{"cluster without redis", kvSpec(&wasmv1.KVPermission{Scope: wasmv1.KVScopeCluster}),
			"permissions.kv.scope is Cluster, but this host has no Redis for it: set the chart value kv.redis.address"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := tb.Ensure(context.Background(), newObj(strings.ReplaceAll(c.name, " ", "-"), d, c.spec))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("load = %v; want an error with %q", err, c.want)
			}
		})
	}
}
