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
	"github.com/wasm-operator/wasm-operator/internal/hostcontract"
)

// MaxNotReadyNodes bounds status.notReadyNodes: a plugin failing on a thousand nodes names a few of them,
// and counts the rest, so the object's size does not grow with the cluster.
const MaxNotReadyNodes = 5

// PhasePending is the phase of a target node whose host has not reported the plugin yet.
const PhasePending = "Pending"

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

// Aggregate is what the target hosts' reports say of one plugin.
type Aggregate struct {
	Target, Ready, Updated int32
	// Failed counts the target nodes whose host reports Failed.
	Failed int32
	// NotReady is a bounded list of target nodes not serving the current generation, failed first.
	NotReady []wasmv1.NodeReport
	// NotReadyCount counts them all.
	NotReadyCount int32
}

// Aggregated reduces the entries the live hosts report for a plugin (by node) over its target nodes: how
// many serve it at all (ready), how many serve digest at generation (updated), and which do not.
func Aggregated(target []string, entries map[string]wasmv1.HostPlugin, generation int64, digest string) Aggregate {
	a := Aggregate{Target: int32(len(target))}
	var notReady []wasmv1.NodeReport
	for _, node := range target {
		e, ok := entries[node]
		switch {
		case !ok:
			notReady = append(notReady, wasmv1.NodeReport{Name: node, Phase: PhasePending,
				Message: "the host has not reported this plugin yet"})
			continue
		case e.Phase == wasmv1.NodePhaseReady:
			a.Ready++
			if e.Digest == digest && e.Generation == generation {
				a.Updated++
				continue
			}
		case e.Phase == wasmv1.NodePhaseFailed:
			a.Failed++
		}
		r := wasmv1.NodeReport{Name: node, Phase: string(e.Phase), Digest: e.Digest, Message: e.Message}
		if e.Phase == wasmv1.NodePhaseReady {
			r.Message = fmt.Sprintf("serves %s at generation %d, not yet %s at %d",
				hostcontract.ShortDigest(e.Digest), e.Generation, hostcontract.ShortDigest(digest), generation)
		}
		notReady = append(notReady, r)
	}
	rank := map[string]int{string(wasmv1.NodePhaseFailed): 0, string(wasmv1.NodePhaseLoading): 1, PhasePending: 2}
	order := func(p string) int {
		if r, ok := rank[p]; ok {
			return r
		}
		return 3
	}
	sort.SliceStable(notReady, func(i, j int) bool { return order(notReady[i].Phase) < order(notReady[j].Phase) })
	a.NotReadyCount = int32(len(notReady))
	if len(notReady) > MaxNotReadyNodes {
		notReady = notReady[:MaxNotReadyNodes]
	}
	for i := range notReady {
		notReady[i].Message = truncate(notReady[i].Message, 1024)
	}
	a.NotReady = notReady
	return a
}

// CorruptReported reports whether a live host says the shared cache holds a corrupt copy of the module.
func CorruptReported(entries map[string]wasmv1.HostPlugin) bool {
	for _, e := range entries {
		if e.Phase == wasmv1.NodePhaseFailed && strings.Contains(e.Message, hostcontract.MessageCorruptModule) {
			return true
		}
	}
	return false
}

// ComputeStatus sets the conditions, node counts and observedGeneration of a plugin from what one reconcile
// concluded, the live hosts and their reports of this plugin (by node). It follows kstatus: Ready is always
// present; Reconciling and Stalled only while True; observedGeneration only moves when the generation was
// fully handled (a valid artifact, a stall the user must fix, or a suspension).
func ComputeStatus(obj *wasmv1.WasmPlugin, o outcome, hosts []Host, entries map[string]wasmv1.HostPlugin, now time.Time) {
	st := &obj.Status
	gen := obj.Generation
	target := TargetHosts(hosts, obj.Spec.Placement)
	var digest string
	if st.Artifact != nil {
		digest = st.Artifact.Digest
	}
	agg := Aggregated(target, entries, gen, digest)
	st.TargetNodes, st.ReadyNodes, st.UpdatedNodes = agg.Target, agg.Ready, agg.Updated
	st.NotReadyNodes, st.NotReadyCount = agg.NotReady, agg.NotReadyCount
	st.NodeSummary = fmt.Sprintf("%d/%d", agg.Updated, agg.Target)

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
			msg += fmt.Sprintf(" (hosts keep serving %s)", hostcontract.ShortDigest(digest))
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
			msg += fmt.Sprintf(" (hosts keep serving %s)", hostcontract.ShortDigest(digest))
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
		nodes := fmt.Sprintf("%d/%d nodes", agg.Updated, agg.Target)
		short := hostcontract.ShortDigest(digest)
		switch {
		case agg.Target == 0:
			msg := fmt.Sprintf("module %s is stored and valid, but nothing serves it: ", short)
			if len(hosts) == 0 {
				msg += "no node host is live (none has registered, or every host's Lease expired)"
			} else {
				msg += fmt.Sprintf("none of the %d live node hosts runs on a node that spec.placement.nodeSelector selects", len(hosts))
			}
			set(wasmv1.ConditionReconciling, metav1.ConditionTrue, wasmv1.ReasonNoHosts, msg)
			set(wasmv1.ConditionReady, metav1.ConditionFalse, wasmv1.ReasonNoHosts, msg)
		case agg.Failed > 0:
			msg := fmt.Sprintf("%s serve %s; failed on %s", nodes, short, describeNotReady(agg, true))
			set(wasmv1.ConditionReconciling, metav1.ConditionTrue, wasmv1.ReasonNodesFailed, msg)
			set(wasmv1.ConditionReady, metav1.ConditionFalse, wasmv1.ReasonNodesFailed, msg)
		case agg.Updated < agg.Target:
			msg := fmt.Sprintf("%s serve %s; waiting for %s", nodes, short, describeNotReady(agg, false))
			set(wasmv1.ConditionReconciling, metav1.ConditionTrue, wasmv1.ReasonWaitingForNodes, msg)
			set(wasmv1.ConditionReady, metav1.ConditionFalse, wasmv1.ReasonWaitingForNodes, msg)
		default:
			remove(wasmv1.ConditionReconciling)
			msg := fmt.Sprintf("%s serve %s", nodes, short)
			if o.Suspended {
				msg += " (suspended: not refreshed)"
			}
			set(wasmv1.ConditionReady, metav1.ConditionTrue, wasmv1.ReasonSucceeded, msg)
		}
	}
}

// describeNotReady names the listed nodes (the failed ones with their messages, when failed is set) and
// counts the rest, so a condition message stays bounded however many nodes fail.
func describeNotReady(a Aggregate, failed bool) string {
	var parts []string
	for _, n := range a.NotReady {
		if failed && n.Phase != string(wasmv1.NodePhaseFailed) {
			continue
		}
		if failed {
			parts = append(parts, n.Name+": "+n.Message)
		} else {
			parts = append(parts, n.Name+" ("+n.Phase+")")
		}
	}
	total := a.NotReadyCount
	if failed {
		total = a.Failed
	}
	s := strings.Join(parts, "; ")
	if more := int(total) - len(parts); more > 0 {
		s += fmt.Sprintf(" and %d more (kubectl get wasmhosts)", more)
	}
	return s
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}
