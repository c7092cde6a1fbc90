package host

import (
	"errors"

	"k8s.io/apimachinery/pkg/types"

	wasmv1 "github.com/wasm-operator/wasm-operator/api/v1alpha1"
	"github.com/wasm-operator/wasm-operator/internal/kv"
	"github.com/wasm-operator/wasm-operator/runtime"
)

// errNoRedis is the load failure of a Cluster-scope plugin on a host without Redis.
var errNoRedis = errors.New("permissions.kv.scope is Cluster, but this host has no Redis for it: " +
	"set the chart value kv.redis.address (manager host --kv-redis-address), or use scope Node")

// attachKV gives a plugin granted permissions.kv its store: the host's own for scope Node, shared by every
// version of the plugin the host loads, or the plugin's entries in the operator's Redis for scope Cluster.
func (h *Plugins) attachKV(key types.NamespacedName, obj *wasmv1.WasmPlugin, cfg *runtime.PluginConfig) error {
	if cfg.Permissions.KV == nil {
		return nil
	}
	perm := obj.Spec.Permissions.KV
	limits := kv.Limits{MaxBytes: perm.GetMaxBytes(), MaxKeys: int(perm.GetMaxKeys())}
	if perm.GetScope() == wasmv1.KVScopeCluster {
		if h.KVRedis == nil {
			return errNoRedis
		}
		cfg.Permissions.KV.Store = h.KVRedis.Store(key.String(), limits)
		return nil
	}
	cfg.Permissions.KV.Store = h.kvNode.Store(key.String(), limits)
	return nil
}
