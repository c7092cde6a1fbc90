package controllers

import (
	"errors"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	wasmv1 "github.com/wasm-operator/wasm-operator/api/v1alpha1"
)

const (
	digestA = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	digestB = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

func TestTargetHosts(t *testing.T) {
	hosts := []Host{
		{Node: "b", Labels: map[string]string{"zone": "x", "wasm": "on"}},
		{Node: "a", Labels: map[string]string{"zone": "y"}},
		{Node: "c"},
	}
	tests := []struct {
		name      string
		placement *wasmv1.Placement
		want      string
	}{
		{"no placement selects every host", nil, "a,b,c"},
		{"empty selector selects every host", &wasmv1.Placement{}, "a,b,c"},
		{"one label", &wasmv1.Placement{NodeSelector: map[string]string{"zone": "x"}}, "b"},
		{"all labels must match", &wasmv1.Placement{NodeSelector: map[string]string{"zone": "x", "wasm": "off"}}, ""},
		{"nothing matches", &wasmv1.Placement{NodeSelector: map[string]string{"gpu": "yes"}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := strings.Join(TargetHosts(hosts, tt.placement), ","); got != tt.want {
				t.Fatalf("TargetHosts = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestNodeCounts(t *testing.T) {
	nodes := []wasmv1.NodeStatus{
		{Name: "a", Digest: digestA, Phase: wasmv1.NodePhaseReady},
		{Name: "b", Digest: digestB, Phase: wasmv1.NodePhaseReady},
		{Name: "c", Digest: digestA, Phase: wasmv1.NodePhaseFailed, Message: "compile: boom"},
		{Name: "d", Phase: wasmv1.NodePhaseLoading},
		{Name: "x", Digest: digestA, Phase: wasmv1.NodePhaseReady}, // not a target
	}
	tests := []struct {
		name       string
		target     []string
		digest     string
		wantReady  int32
		wantFailed string
	}{
		{"ready only for the artifact's digest", []string{"a", "b"}, digestA, 1, ""},
		{"other digest", []string{"a", "b"}, digestB, 1, ""},
		{"failed listed with message", []string{"a", "c"}, digestA, 1, "c: compile: boom"},
		{"loading and missing are not ready", []string{"d", "e"}, digestA, 0, ""},
		{"no targets", nil, digestA, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ready, failed := NodeCounts(tt.target, nodes, tt.digest)
			if ready != tt.wantReady || strings.Join(failed, ";") != tt.wantFailed {
				t.Fatalf("NodeCounts = %d, %q; want %d, %q", ready, failed, tt.wantReady, tt.wantFailed)
			}
		})
	}
}

func TestPruneNodes(t *testing.T) {
	nodes := []wasmv1.NodeStatus{{Name: "a"}, {Name: "b"}}
	if got := PruneNodes(nodes, []Host{{Node: "a"}, {Node: "b"}}); len(got) != 2 {
		t.Fatalf("live hosts pruned: %v", got)
	}
	got := PruneNodes(nodes, []Host{{Node: "b"}})
	if len(got) != 1 || got[0].Name != "b" {
		t.Fatalf("PruneNodes = %v, want only b", got)
	}
	if len(nodes) != 2 || nodes[0].Name != "a" {
		t.Fatalf("PruneNodes changed its input: %v", nodes)
	}
}

// TestComputeStatus checks the conditions a user and kstatus see for each situation.
func TestComputeStatus(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	withArtifact := func(nodes ...wasmv1.NodeStatus) wasmv1.WasmPluginStatus {
		return wasmv1.WasmPluginStatus{ObservedGeneration: 1, Artifact: &wasmv1.Artifact{Digest: digestA}, Nodes: nodes}
	}
	ready := func(n string) wasmv1.NodeStatus {
		return wasmv1.NodeStatus{Name: n, Digest: digestA, Phase: wasmv1.NodePhaseReady}
	}
	twoHosts := []Host{{Node: "a"}, {Node: "b"}}
	tests := []struct {
		name        string
		status      wasmv1.WasmPluginStatus
		o           outcome
		hosts       []Host
		wantReady   metav1.ConditionStatus
		wantReason  string
		wantRecon   bool
		wantStalled bool
		wantFetch   bool
		wantObsGen  int64
		wantSummary string
		wantMsg     string
	}{
		{"ready on every target", withArtifact(ready("a"), ready("b")), outcome{Valid: true}, twoHosts,
			metav1.ConditionTrue, wasmv1.ReasonSucceeded, false, false, false, 2, "2/2", "2/2 nodes serve aaaaaaaaaaaa"},
		{"waiting for one host", withArtifact(ready("a")), outcome{Valid: true}, twoHosts,
			metav1.ConditionFalse, wasmv1.ReasonWaitingForNodes, true, false, false, 2, "1/2", "waiting for the other hosts"},
		{"a host failed", withArtifact(ready("a"), wasmv1.NodeStatus{Name: "b", Digest: digestA, Phase: wasmv1.NodePhaseFailed, Message: "disk full"}),
			outcome{Valid: true}, twoHosts, metav1.ConditionFalse, wasmv1.ReasonNodesFailed, true, false, false, 2, "1/2", "b: disk full"},
		{"dead host's entry dropped", withArtifact(ready("a"), wasmv1.NodeStatus{Name: "gone", Phase: wasmv1.NodePhaseFailed}),
			outcome{Valid: true}, []Host{{Node: "a"}}, metav1.ConditionTrue, wasmv1.ReasonSucceeded, false, false, false, 2, "1/1", ""},
		{"no hosts", withArtifact(), outcome{Valid: true}, nil,
			metav1.ConditionTrue, wasmv1.ReasonSucceeded, false, false, false, 2, "0/0", "no live node host matches placement"},
		{"fetching", wasmv1.WasmPluginStatus{}, outcome{}, twoHosts,
			metav1.ConditionFalse, wasmv1.ReasonProgressing, true, false, false, 0, "0/2", "fetching"},
		{"stalled keeps the old artifact serving", withArtifact(ready("a"), ready("b")),
			outcome{Stall: &stallError{Reason: wasmv1.ReasonDigestMismatch, Err: errors.New("content sha256:ccc does not match the pin")}},
			twoHosts, metav1.ConditionFalse, wasmv1.ReasonDigestMismatch, false, true, false, 2, "2/2", "hosts keep serving aaaaaaaaaaaa"},
		{"transient failure of a new generation", withArtifact(ready("a"), ready("b")),
			outcome{Transient: errors.New("connection refused")}, twoHosts,
			metav1.ConditionFalse, wasmv1.ReasonFetchFailed, true, false, true, 1, "2/2", "connection refused"},
		{"failed refresh keeps a valid generation Ready", withArtifact(ready("a"), ready("b")),
			outcome{Valid: true, Transient: errors.New("registry answered 503")}, twoHosts,
			metav1.ConditionTrue, wasmv1.ReasonSucceeded, false, false, true, 2, "2/2", "2/2 nodes serve"},
		{"suspended while valid", withArtifact(ready("a")), outcome{Valid: true, Suspended: true}, []Host{{Node: "a"}},
			metav1.ConditionTrue, wasmv1.ReasonSucceeded, false, false, false, 2, "1/1", "suspended"},
		{"suspended before valid", wasmv1.WasmPluginStatus{}, outcome{Suspended: true}, twoHosts,
			metav1.ConditionFalse, wasmv1.ReasonSuspended, false, false, false, 2, "0/2", "spec.suspend is true"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obj := &wasmv1.WasmPlugin{Status: tt.status}
			obj.Generation = 2
			// A stale Reconciling condition must go away when no longer true.
			meta.SetStatusCondition(&obj.Status.Conditions, metav1.Condition{Type: wasmv1.ConditionReconciling,
				Status: metav1.ConditionTrue, Reason: "Old", Message: "old"})
			ComputeStatus(obj, tt.o, tt.hosts, now)
			st := obj.Status
			r := meta.FindStatusCondition(st.Conditions, wasmv1.ConditionReady)
			if r == nil {
				t.Fatal("Ready condition missing: kstatus needs it always")
			}
			if r.Status != tt.wantReady || r.Reason != tt.wantReason {
				t.Errorf("Ready = %s/%s, want %s/%s (%s)", r.Status, r.Reason, tt.wantReady, tt.wantReason, r.Message)
			}
			if !strings.Contains(r.Message, tt.wantMsg) {
				t.Errorf("Ready message %q does not say %q", r.Message, tt.wantMsg)
			}
			for typ, want := range map[string]bool{wasmv1.ConditionReconciling: tt.wantRecon,
				wasmv1.ConditionStalled: tt.wantStalled, wasmv1.ConditionFetchFailed: tt.wantFetch} {
				c := meta.FindStatusCondition(st.Conditions, typ)
				if (c != nil) != want || (c != nil && c.Status != metav1.ConditionTrue) {
					t.Errorf("condition %s = %v, want present and True: %v", typ, c, want)
				}
			}
			if st.ObservedGeneration != tt.wantObsGen {
				t.Errorf("observedGeneration = %d, want %d", st.ObservedGeneration, tt.wantObsGen)
			}
			if st.NodeSummary != tt.wantSummary {
				t.Errorf("nodeSummary = %q, want %q", st.NodeSummary, tt.wantSummary)
			}
		})
	}
}

func TestValidForGeneration(t *testing.T) {
	cond := func(reason string, gen int64) []metav1.Condition {
		return []metav1.Condition{{Type: wasmv1.ConditionReady, Reason: reason, ObservedGeneration: gen}}
	}
	art := &wasmv1.Artifact{Digest: digestA}
	tests := []struct {
		name   string
		status wasmv1.WasmPluginStatus
		want   bool
	}{
		{"ready", wasmv1.WasmPluginStatus{ObservedGeneration: 2, Artifact: art, Conditions: cond(wasmv1.ReasonSucceeded, 2)}, true},
		{"hosts loading", wasmv1.WasmPluginStatus{ObservedGeneration: 2, Artifact: art, Conditions: cond(wasmv1.ReasonWaitingForNodes, 2)}, true},
		{"older generation", wasmv1.WasmPluginStatus{ObservedGeneration: 1, Artifact: art, Conditions: cond(wasmv1.ReasonSucceeded, 1)}, false},
		{"stalled with the last good artifact", wasmv1.WasmPluginStatus{ObservedGeneration: 2, Artifact: art, Conditions: cond(wasmv1.ReasonInvalidModule, 2)}, false},
		{"suspended before it was valid", wasmv1.WasmPluginStatus{ObservedGeneration: 2, Artifact: art, Conditions: cond(wasmv1.ReasonSuspended, 2)}, false},
		{"no artifact", wasmv1.WasmPluginStatus{ObservedGeneration: 2, Conditions: cond(wasmv1.ReasonSucceeded, 2)}, false},
	}
	for _, tt := range tests {
		obj := &wasmv1.WasmPlugin{Status: tt.status}
		obj.Generation = 2
		if got := validForGeneration(obj); got != tt.want {
			t.Errorf("%s: validForGeneration = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestCorruptReported(t *testing.T) {
	entry := func(phase wasmv1.NodePhase, msg string) wasmv1.NodeStatus {
		return wasmv1.NodeStatus{Name: "n", Phase: phase, Message: msg}
	}
	for _, c := range []struct {
		nodes []wasmv1.NodeStatus
		want  bool
	}{
		{nil, false},
		{[]wasmv1.NodeStatus{entry(wasmv1.NodePhaseReady, "")}, false},
		{[]wasmv1.NodeStatus{entry(wasmv1.NodePhaseFailed, "load abc123: compile: out of memory")}, false},
		{[]wasmv1.NodeStatus{entry(wasmv1.NodePhaseReady, ""),
			entry(wasmv1.NodePhaseFailed, "load abc123: "+MessageCorruptModule+"; the controller stores it again: ...")}, true},
		{[]wasmv1.NodeStatus{entry(wasmv1.NodePhaseLoading, MessageCorruptModule)}, false},
	} {
		if got := CorruptReported(c.nodes); got != c.want {
			t.Errorf("CorruptReported(%+v) = %v, want %v", c.nodes, got, c.want)
		}
	}
}
