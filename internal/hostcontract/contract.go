// Package hostcontract is what the controller and the node hosts agree on: the names and labels of the
// hosts' Leases and WasmHost objects, when a Lease is live, the index key of a host's plugin entries, and the
// phrase by which a host asks the controller to store a module again. Both sides import it; neither imports
// the other.
package hostcontract

import (
	"slices"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/types"

	wasmv1 "github.com/wasm-operator/wasm-operator/api/v1alpha1"
)

const (
	// LeasePrefix starts the name of each node's host Lease: wasm-host-<node>.
	LeasePrefix = "wasm-host-"
	// LeaseLabel marks host Leases, so the controller lists only those; its value is the node.
	LeaseLabel = "wasm-operator.dev/host"
	// FieldManager is the field manager of the hosts' writes.
	FieldManager = "wasm-operator-host"
)

// MessageCorruptModule is part of a host's message for a plugin when the file of the artifact's digest in
// the shared cache is not that module (another content, a special file, another size). Hosts mount the cache
// read-only and cannot repair it; the controller, finding the phrase in a Failed entry of a live host, checks
// the stored file itself, removes it when it is indeed corrupt, and stores the module again, after which the
// host's retry loads it.
const MessageCorruptModule = "module in the shared cache is corrupt"

// LeaseName is the name of node's host Lease.
func LeaseName(node string) string { return LeasePrefix + node }

// LeaseNode is the node of a host Lease, from its name.
func LeaseNode(leaseName string) string { return strings.TrimPrefix(leaseName, LeasePrefix) }

// LeaseLive reports whether a Lease is held and not expired at now.
func LeaseLive(l *coordinationv1.Lease, now time.Time) bool {
	if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" || l.Spec.RenewTime == nil ||
		l.Spec.LeaseDurationSeconds == nil {
		return false
	}
	return now.Before(l.Spec.RenewTime.Add(time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second))
}

// PluginKey is the index value of a plugin in WasmHost entries: namespace/name.
func PluginKey(key types.NamespacedName) string { return key.Namespace + "/" + key.Name }

// ShortDigest is the first 12 hex characters of a sha256 digest, as kubectl shows it.
func ShortDigest(digest string) string {
	hex := strings.TrimPrefix(digest, "sha256:")
	if len(hex) > 12 {
		hex = hex[:12]
	}
	return hex
}

// SameEntry reports whether two entries of a host's report say the same, ignoring their since times: a
// change of since alone is no news for the controller, and no reason for a host to write.
func SameEntry(a, b wasmv1.HostPlugin) bool {
	return a.Namespace == b.Namespace && a.Name == b.Name && a.Generation == b.Generation && a.Digest == b.Digest &&
		a.Phase == b.Phase && a.Message == b.Message &&
		slices.EqualFunc(a.FailingSchedules, b.FailingSchedules, func(x, y wasmv1.HostScheduleFailure) bool {
			return x.Name == y.Name && x.ReturnCode == y.ReturnCode && x.Message == y.Message && x.Since.Equal(y.Since)
		})
}
