package controllers

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	wasmv1 "github.com/wasm-operator/wasm-operator/api/v1alpha1"
)

// MessageCorruptModule is part of a host's status message when the file of the artifact's digest in the
// shared cache is not that module (another content, a special file, another size). Hosts mount the cache
// read-only and cannot repair it; the controller, finding the phrase in a Failed entry, checks the stored
// file itself, removes it when it is indeed corrupt, and stores the module again, after which the host's
// retry loads it. This is the whole contract between the two, on whatever object carries host entries.
const MessageCorruptModule = "module in the shared cache is corrupt"

// CorruptReported reports whether a host says the shared cache holds a corrupt copy of the module it loads.
func CorruptReported(nodes []wasmv1.NodeStatus) bool {
	for _, n := range nodes {
		if n.Phase == wasmv1.NodePhaseFailed && strings.Contains(n.Message, MessageCorruptModule) {
			return true
		}
	}
	return false
}

// Host is a live node host: one whose Lease has not expired.
type Host struct {
	// Node is the node's name.
	Node string
	// Labels are the labels of the host's Node object (empty when there is none).
	Labels map[string]string
}

// outcome is what the source steps of one reconcile concluded about the current generation.
type outcome struct {
	// Valid is true when status.artifact holds a stored, validated module for the current generation,
	// validated now or, when a refresh failed (Transient) or the plugin is suspended, in an earlier reconcile.
	Valid bool
	// Suspended is true when spec.suspend stopped the source steps.
	Suspended bool
	// Stall is set when the user must change something; Reason is a Reason* constant.
	Stall *stallError
	// Transient is set when fetching failed for a reason that may pass.
	Transient error
}

// TargetHosts returns the names of the live hosts whose node labels match the plugin's placement, sorted.
func TargetHosts(hosts []Host, placement *wasmv1.Placement) []string {
	sel := labels.SelectorFromSet(placement.GetNodeSelector())
	var out []string
	for _, h := range hosts {
		if sel.Matches(labels.Set(h.Labels)) {
			out = append(out, h.Node)
		}
	}
	sort.Strings(out)
	return out
}

// PruneNodes drops the entries of hosts that are not live any more (their Lease expired or is gone), so the
// status shows only what is served now. It returns nodes itself when nothing is dropped.
func PruneNodes(nodes []wasmv1.NodeStatus, hosts []Host) []wasmv1.NodeStatus {
	live := make(map[string]bool, len(hosts))
	for _, h := range hosts {
		live[h.Node] = true
	}
	keep := nodes[:0:0]
	for _, n := range nodes {
		if live[n.Name] {
			keep = append(keep, n)
		}
	}
	if len(keep) == len(nodes) {
		return nodes
	}
	return keep
}

// NodeCounts counts the target hosts that serve digest (ready) and lists those that report Failed, with
// their messages, sorted by node name.
func NodeCounts(target []string, nodes []wasmv1.NodeStatus, digest string) (ready int32, failed []string) {
	byName := make(map[string]wasmv1.NodeStatus, len(nodes))
	for _, n := range nodes {
		byName[n.Name] = n
	}
	for _, name := range target {
		n, ok := byName[name]
		switch {
		case !ok:
		case n.Phase == wasmv1.NodePhaseReady && n.Digest == digest:
			ready++
		case n.Phase == wasmv1.NodePhaseFailed:
			failed = append(failed, fmt.Sprintf("%s: %s", name, n.Message))
		}
	}
	return ready, failed
}

// ShortDigest is the first 12 hex characters of a sha256 digest, as kubectl shows it.
func ShortDigest(digest string) string {
	hex := strings.TrimPrefix(digest, "sha256:")
	if len(hex) > 12 {
		hex = hex[:12]
	}
	return hex
}

// ComputeStatus sets the conditions, node counts and observedGeneration of a plugin from what one reconcile
// concluded and the live hosts. It follows kstatus: Ready is always present; Reconciling and Stalled only
// while True; observedGeneration only moves when the generation was fully handled (a valid artifact, a
// stall the user must fix, or a suspension).
func ComputeStatus(obj *wasmv1.WasmPlugin, o outcome, hosts []Host, now time.Time) {
	st := &obj.Status
	gen := obj.Generation
	st.Nodes = PruneNodes(st.Nodes, hosts)

	target := TargetHosts(hosts, obj.Spec.Placement)
	var digest string
	if st.Artifact != nil {
		digest = st.Artifact.Digest
	}
	ready, failed := NodeCounts(target, st.Nodes, digest)
	st.TargetNodes = int32(len(target))
	st.ReadyNodes = ready
	st.NodeSummary = fmt.Sprintf("%d/%d", ready, len(target))

	set := func(typ string, status metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{
			Type: typ, Status: status, Reason: reason, Message: truncate(msg, 32768),
			ObservedGeneration: gen, LastTransitionTime: metav1.NewTime(now),
		})
	}
	remove := func(typ string) { meta.RemoveStatusCondition(&st.Conditions, typ) }

	if o.Transient != nil {
		set(wasmv1.ConditionFetchFailed, metav1.ConditionTrue, wasmv1.ReasonFetchFailed,
			o.Transient.Error()+"; retrying with backoff, the last good module keeps serving")
	} else {
		remove(wasmv1.ConditionFetchFailed)
	}

	switch {
	case o.Stall != nil:
		msg := o.Stall.Error()
		if digest != "" {
			msg += fmt.Sprintf(" (hosts keep serving %s)", ShortDigest(digest))
		}
		set(wasmv1.ConditionStalled, metav1.ConditionTrue, o.Stall.Reason, msg)
		set(wasmv1.ConditionReady, metav1.ConditionFalse, o.Stall.Reason, msg)
		remove(wasmv1.ConditionReconciling)
		st.ObservedGeneration = gen

	case o.Suspended && !o.Valid:
		remove(wasmv1.ConditionStalled)
		remove(wasmv1.ConditionReconciling)
		msg := "spec.suspend is true: the current spec is not applied; set it to false to resume"
		if digest != "" {
			msg += fmt.Sprintf(" (hosts keep serving %s)", ShortDigest(digest))
		}
		set(wasmv1.ConditionReady, metav1.ConditionFalse, wasmv1.ReasonSuspended, msg)
		st.ObservedGeneration = gen

	case !o.Valid:
		remove(wasmv1.ConditionStalled)
		reason, msg := wasmv1.ReasonProgressing, "fetching and validating the module"
		if o.Transient != nil {
			reason, msg = wasmv1.ReasonFetchFailed, "fetching the module failed, retrying: "+o.Transient.Error()
		}
		set(wasmv1.ConditionReconciling, metav1.ConditionTrue, reason, msg)
		set(wasmv1.ConditionReady, metav1.ConditionFalse, reason, msg)

	default:
		remove(wasmv1.ConditionStalled)
		st.ObservedGeneration = gen
		nodes := fmt.Sprintf("%d/%d nodes", ready, len(target))
		switch {
		case len(failed) > 0:
			msg := fmt.Sprintf("%s serve %s; failed on %s", nodes, ShortDigest(digest), strings.Join(failed, "; "))
			set(wasmv1.ConditionReconciling, metav1.ConditionTrue, wasmv1.ReasonNodesFailed, msg)
			set(wasmv1.ConditionReady, metav1.ConditionFalse, wasmv1.ReasonNodesFailed, msg)
		case int(ready) < len(target):
			msg := fmt.Sprintf("%s serve %s; waiting for the other hosts to load it", nodes, ShortDigest(digest))
			set(wasmv1.ConditionReconciling, metav1.ConditionTrue, wasmv1.ReasonWaitingForNodes, msg)
			set(wasmv1.ConditionReady, metav1.ConditionFalse, wasmv1.ReasonWaitingForNodes, msg)
		default:
			remove(wasmv1.ConditionReconciling)
			msg := fmt.Sprintf("%s serve %s", nodes, ShortDigest(digest))
			if len(target) == 0 {
				msg = fmt.Sprintf("module %s is stored and valid; no live node host matches placement", ShortDigest(digest))
			}
			if o.Suspended {
				msg += " (suspended: not refreshed)"
			}
			set(wasmv1.ConditionReady, metav1.ConditionTrue, wasmv1.ReasonSucceeded, msg)
		}
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}
