package controllers

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	wasmv1 "github.com/wasm-operator/wasm-operator/api/v1alpha1"
	"github.com/wasm-operator/wasm-operator/internal/hostcontract"
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

func TestAggregated(t *testing.T) {
	entries := map[string]wasmv1.HostPlugin{
		"a": {Digest: digestA, Generation: 2, Phase: wasmv1.NodePhaseReady},
		"b": {Digest: digestB, Generation: 1, Phase: wasmv1.NodePhaseReady},
		"c": {Digest: digestB, Generation: 2, Phase: wasmv1.NodePhaseFailed, Message: "compile: boom"},
		"d": {Generation: 2, Phase: wasmv1.NodePhaseLoading, Message: "loading aaaaaaaaaaaa"},
		"x": {Digest: digestA, Generation: 2, Phase: wasmv1.NodePhaseReady}, // not a target
	}
	tests := []struct {
		name   string
		target []string
		want   Aggregate
	}{
		{"updated only at the generation and digest", []string{"a", "b"}, Aggregate{Target: 2, Ready: 2, Updated: 1, NotReadyCount: 1,
			NotReady: []wasmv1.NodeReport{{Name: "b", Phase: "Ready", Digest: digestB,
				Message: "serves bbbbbbbbbbbb at generation 1, not yet aaaaaaaaaaaa at 2"}}}},
		{"failed first, then loading, then pending", []string{"a", "e", "d", "c"}, Aggregate{Target: 4, Ready: 1, Updated: 1, Failed: 1, NotReadyCount: 3,
			NotReady: []wasmv1.NodeReport{
				{Name: "c", Phase: "Failed", Digest: digestB, Message: "compile: boom"},
				{Name: "d", Phase: "Loading", Message: "loading aaaaaaaaaaaa"},
				{Name: "e", Phase: PhasePending, Message: "the host has not reported this plugin yet"}}}},
		{"no targets", nil, Aggregate{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Aggregated(tt.target, entries, 2, digestA); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Aggregated =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

// A thousand failing nodes make a status of bounded size that still names a few and counts the rest.
func TestAggregatedBounded(t *testing.T) {
	var target []string
	entries := map[string]wasmv1.HostPlugin{}
	for i := range 1000 {
		n := fmt.Sprintf("node-%04d", i)
		target = append(target, n)
		entries[n] = wasmv1.HostPlugin{Phase: wasmv1.NodePhaseFailed, Message: strings.Repeat("x", 2000)}
	}
	a := Aggregated(target, entries, 1, digestA)
	if len(a.NotReady) != MaxNotReadyNodes || a.NotReadyCount != 1000 || a.Failed != 1000 {
		t.Fatalf("%d listed, %d counted, %d failed; want %d, 1000, 1000", len(a.NotReady), a.NotReadyCount, a.Failed, MaxNotReadyNodes)
	}
	if got := describeNotReady(a, true); !strings.HasSuffix(got, " and 995 more (kubectl get wasmhosts)") || len(got) > 6000 {
		t.Fatalf("description of %d bytes ends %q", len(got), got[len(got)-60:])
	}
}

// TestComputeStatus checks the whole conditions a user and kstatus see for each situation.
func TestComputeStatus(t *testing.T) {
	now := metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	withArtifact := wasmv1.WasmPluginStatus{ObservedGeneration: 1, Artifact: &wasmv1.Artifact{Digest: digestA}}
	ready := wasmv1.HostPlugin{Digest: digestA, Generation: 2, Phase: wasmv1.NodePhaseReady}
	both := map[string]wasmv1.HostPlugin{"a": ready, "b": ready}
	twoHosts := []Host{{Node: "a"}, {Node: "b"}}
	cond := func(typ string, status metav1.ConditionStatus, reason, msg string) metav1.Condition {
		return metav1.Condition{Type: typ, Status: status, Reason: reason, Message: msg, ObservedGeneration: 2, LastTransitionTime: now}
	}
	readyC := func(status metav1.ConditionStatus, reason, msg string) metav1.Condition {
		return cond(wasmv1.ConditionReady, status, reason, msg)
	}
	recon := func(reason, msg string) metav1.Condition {
		return cond(wasmv1.ConditionReconciling, metav1.ConditionTrue, reason, msg)
	}
	both2 := func(reason, msg string) []metav1.Condition {
		return []metav1.Condition{recon(reason, msg), readyC(metav1.ConditionFalse, reason, msg)}
	}
	noHost := "module aaaaaaaaaaaa is stored and valid, but nothing serves it: "
	tests := []struct {
		name        string
		status      wasmv1.WasmPluginStatus
		o           outcome
		hosts       []Host
		selector    map[string]string
		entries     map[string]wasmv1.HostPlugin
		want        []metav1.Condition
		wantObsGen  int64
		wantSummary string
	}{
		{"ready on every target", withArtifact, outcome{Valid: true}, twoHosts, nil, both,
			[]metav1.Condition{readyC(metav1.ConditionTrue, wasmv1.ReasonSucceeded, "2/2 nodes serve aaaaaaaaaaaa")}, 2, "2/2"},
		{"waiting for one host", withArtifact, outcome{Valid: true}, twoHosts, nil, map[string]wasmv1.HostPlugin{"a": ready},
			both2(wasmv1.ReasonWaitingForNodes, "1/2 nodes serve aaaaaaaaaaaa; waiting for b (Pending)"), 2, "1/2"},
		{"a host failed", withArtifact, outcome{Valid: true}, twoHosts, nil,
			map[string]wasmv1.HostPlugin{"a": ready, "b": {Digest: digestA, Generation: 2, Phase: wasmv1.NodePhaseFailed, Message: "disk full"}},
			both2(wasmv1.ReasonNodesFailed, "1/2 nodes serve aaaaaaaaaaaa; failed on b: disk full"), 2, "1/2"},
		{"a host still on the last generation", withArtifact, outcome{Valid: true}, twoHosts, nil,
			map[string]wasmv1.HostPlugin{"a": ready, "b": {Digest: digestA, Generation: 1, Phase: wasmv1.NodePhaseReady}},
			both2(wasmv1.ReasonWaitingForNodes, "1/2 nodes serve aaaaaaaaaaaa; waiting for b (Ready)"), 2, "1/2"},
		{"a report of a host that is not live is ignored", withArtifact, outcome{Valid: true}, []Host{{Node: "a"}}, nil,
			map[string]wasmv1.HostPlugin{"a": ready, "gone": {Phase: wasmv1.NodePhaseFailed}},
			[]metav1.Condition{readyC(metav1.ConditionTrue, wasmv1.ReasonSucceeded, "1/1 nodes serve aaaaaaaaaaaa")}, 2, "1/1"},
		{"no live host is not ready", withArtifact, outcome{Valid: true}, nil, nil, nil,
			both2(wasmv1.ReasonNoHosts, noHost+"no node host is live (none has registered, or every host's Lease expired)"), 2, "0/0"},
		{"placement matches no live host", withArtifact, outcome{Valid: true}, []Host{{Node: "a", Labels: map[string]string{"zone": "x"}}},
			map[string]string{"zone": "y"}, nil,
			both2(wasmv1.ReasonNoHosts, noHost+"none of the 1 live node hosts runs on a node that spec.placement.nodeSelector selects"), 2, "0/0"},
		{"fetching", wasmv1.WasmPluginStatus{}, outcome{}, twoHosts, nil, nil,
			both2(wasmv1.ReasonProgressing, "fetching and validating the module"), 0, "0/2"},
		{"stalled keeps the old artifact serving", withArtifact,
			outcome{Stall: &stallError{Reason: wasmv1.ReasonDigestMismatch, Err: errors.New("content sha256:ccc does not match the pin")}},
			twoHosts, nil, both, []metav1.Condition{
				cond(wasmv1.ConditionStalled, metav1.ConditionTrue, wasmv1.ReasonDigestMismatch, "content sha256:ccc does not match the pin (hosts keep serving aaaaaaaaaaaa)"),
				readyC(metav1.ConditionFalse, wasmv1.ReasonDigestMismatch, "content sha256:ccc does not match the pin (hosts keep serving aaaaaaaaaaaa)")}, 2, "2/2"},
		{"transient failure of a new generation", withArtifact, outcome{Transient: errors.New("connection refused")}, twoHosts, nil, both,
			append(both2(wasmv1.ReasonFetchFailed, "fetching the module failed, retrying: connection refused"),
				cond(wasmv1.ConditionFetchFailed, metav1.ConditionTrue, wasmv1.ReasonFetchFailed, "connection refused; retrying with backoff, the last good module keeps serving")), 1, "2/2"},
		{"failed refresh keeps a valid generation Ready", withArtifact, outcome{Valid: true, Transient: errors.New("registry answered 503")}, twoHosts, nil, both, []metav1.Condition{
			cond(wasmv1.ConditionFetchFailed, metav1.ConditionTrue, wasmv1.ReasonFetchFailed, "registry answered 503; retrying with backoff, the last good module keeps serving"),
			readyC(metav1.ConditionTrue, wasmv1.ReasonSucceeded, "2/2 nodes serve aaaaaaaaaaaa")}, 2, "2/2"},
		{"suspended while valid", withArtifact, outcome{Valid: true, Suspended: true}, []Host{{Node: "a"}}, nil, both,
			[]metav1.Condition{readyC(metav1.ConditionTrue, wasmv1.ReasonSucceeded, "1/1 nodes serve aaaaaaaaaaaa (suspended: not refreshed)")}, 2, "1/1"},
		{"suspended before valid", wasmv1.WasmPluginStatus{}, outcome{Suspended: true}, twoHosts, nil, nil, []metav1.Condition{
			readyC(metav1.ConditionFalse, wasmv1.ReasonSuspended, "spec.suspend is true: the current spec is not applied; set it to false to resume")}, 2, "0/2"},
	}
	byType := func(c []metav1.Condition) []metav1.Condition {
		c = slices.Clone(c)
		slices.SortFunc(c, func(a, b metav1.Condition) int { return strings.Compare(a.Type, b.Type) })
		return c
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obj := &wasmv1.WasmPlugin{Status: tt.status}
			obj.Generation = 2
			obj.Spec.Placement = &wasmv1.Placement{NodeSelector: tt.selector}
			// A stale Reconciling condition must go away when no longer true.
			meta.SetStatusCondition(&obj.Status.Conditions, metav1.Condition{Type: wasmv1.ConditionReconciling,
				Status: metav1.ConditionTrue, Reason: "Old", Message: "old", LastTransitionTime: now})
			ComputeStatus(obj, tt.o, tt.hosts, tt.entries, now.Time)
			st := obj.Status
			if got, want := byType(st.Conditions), byType(tt.want); !reflect.DeepEqual(got, want) {
				t.Errorf("conditions =\n%+v\nwant\n%+v", got, want)
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

func TestCorruptReported(t *testing.T) {
	entry := func(phase wasmv1.NodePhase, msg string) wasmv1.HostPlugin {
		return wasmv1.HostPlugin{Phase: phase, Message: msg}
	}
	for _, c := range []struct {
		entries map[string]wasmv1.HostPlugin
		want    bool
	}{
		{nil, false},
		{map[string]wasmv1.HostPlugin{"a": entry(wasmv1.NodePhaseReady, "")}, false},
		{map[string]wasmv1.HostPlugin{"a": entry(wasmv1.NodePhaseFailed, "load abc123: compile: out of memory")}, false},
		{map[string]wasmv1.HostPlugin{"a": entry(wasmv1.NodePhaseReady, ""),
			"b": entry(wasmv1.NodePhaseFailed, "load abc123: "+hostcontract.MessageCorruptModule+"; the controller stores it again: ...")}, true},
		{map[string]wasmv1.HostPlugin{"a": entry(wasmv1.NodePhaseLoading, hostcontract.MessageCorruptModule)}, false},
	} {
		if got := CorruptReported(c.entries); got != c.want {
			t.Errorf("CorruptReported(%+v) = %v, want %v", c.entries, got, c.want)
		}
	}
}

// A WasmHost update enqueues exactly the plugins whose entry changed; a new since time alone is no change.
func TestChangedReports(t *testing.T) {
	at := func(s int64) *metav1.Time { return &metav1.Time{Time: time.Unix(s, 0)} }
	host := func(entries ...wasmv1.HostPlugin) *wasmv1.WasmHost {
		return &wasmv1.WasmHost{Status: wasmv1.WasmHostStatus{Plugins: entries}}
	}
	a1 := wasmv1.HostPlugin{Namespace: "ns", Name: "a", Phase: wasmv1.NodePhaseReady, Since: at(1)}
	a2 := a1
	a2.Since = at(2)
	aFailed := a1
	aFailed.Phase = wasmv1.NodePhaseFailed
	b := wasmv1.HostPlugin{Namespace: "ns", Name: "b", Phase: wasmv1.NodePhaseReady}
	for _, c := range []struct {
		name     string
		old, cur *wasmv1.WasmHost
		want     string
	}{
		{"created", nil, host(a1, b), "ns/a,ns/b"},
		{"deleted", host(a1), nil, "ns/a"},
		{"since only", host(a1, b), host(a2, b), ""},
		{"phase", host(a1, b), host(aFailed, b), "ns/a"},
		{"removed entry", host(a1, b), host(b), "ns/a"},
	} {
		var got []string
		for k := range ChangedReports(c.old, c.cur) {
			got = append(got, k.String())
		}
		slices.Sort(got)
		if strings.Join(got, ",") != c.want {
			t.Errorf("%s: %v, want %s", c.name, got, c.want)
		}
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
		{"valid, no live host", wasmv1.WasmPluginStatus{ObservedGeneration: 2, Artifact: art, Conditions: cond(wasmv1.ReasonNoHosts, 2)}, true},
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

// Only a change of how many hosts serve the new generation so far is progress; a change of reason,
// generation or artifact is not, and neither is no change at all.
func TestProgressOnly(t *testing.T) {
	st := func(reason string, gen int64, digest string, updated int32) *wasmv1.WasmPluginStatus {
		return &wasmv1.WasmPluginStatus{ObservedGeneration: gen, Artifact: &wasmv1.Artifact{Digest: digest}, UpdatedNodes: updated,
			NodeSummary: fmt.Sprintf("%d/9", updated), Conditions: []metav1.Condition{
				{Type: wasmv1.ConditionReady, Status: metav1.ConditionFalse, Reason: reason, Message: fmt.Sprintf("%d/9 nodes serve", updated)}}}
	}
	w := wasmv1.ReasonWaitingForNodes
	for _, c := range []struct {
		name          string
		before, after *wasmv1.WasmPluginStatus
		want          bool
	}{
		{"more hosts serve", st(w, 2, digestA, 3), st(w, 2, digestA, 5), true},
		{"nothing changed", st(w, 2, digestA, 3), st(w, 2, digestA, 3), false},
		{"now Ready", st(w, 2, digestA, 8), st(wasmv1.ReasonSucceeded, 2, digestA, 9), false},
		{"a new generation", st(w, 2, digestA, 3), st(w, 3, digestA, 0), false},
		{"a new artifact", st(w, 2, digestA, 3), st(w, 2, digestB, 0), false},
		{"hosts failing", st(w, 2, digestA, 3), st(wasmv1.ReasonNodesFailed, 2, digestA, 3), false},
	} {
		if got := ProgressOnly(c.before, c.after); got != c.want {
			t.Errorf("%s: ProgressOnly = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestNodeScheduleStatus(t *testing.T) {
	since := &metav1.Time{Time: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)}
	spec := []wasmv1.Schedule{
		{Name: "cluster", Schedule: "@every 1m", Function: "f"},
		{Name: "local", Schedule: "@every 1m", Function: "f", Scope: wasmv1.ScheduleScopeNode},
		{Name: "other", Schedule: "@every 1m", Function: "f", Scope: wasmv1.ScheduleScopeNode},
	}
	entry := func(gen int64, phase wasmv1.NodePhase, failing ...wasmv1.HostScheduleFailure) wasmv1.HostPlugin {
		return wasmv1.HostPlugin{Namespace: "ns", Name: "p", Generation: gen, Phase: phase, FailingSchedules: failing}
	}
	boom := wasmv1.HostScheduleFailure{Name: "local", ReturnCode: 1, Message: "boom", Since: since}
	for _, tc := range []struct {
		name    string
		reports map[string]wasmv1.HostPlugin
		want    []wasmv1.ScheduleStatus
	}{
		{"no host", nil, []wasmv1.ScheduleStatus{{Name: "local"}, {Name: "other"}}},
		{"none fails", map[string]wasmv1.HostPlugin{"a": entry(2, wasmv1.NodePhaseReady)},
			[]wasmv1.ScheduleStatus{{Name: "local"}, {Name: "other"}}},
		{"fails on two nodes: the first by name is shown", map[string]wasmv1.HostPlugin{
			"b": entry(2, wasmv1.NodePhaseReady, boom), "a": entry(2, wasmv1.NodePhaseReady, boom), "c": entry(2, wasmv1.NodePhaseReady)},
			[]wasmv1.ScheduleStatus{{Name: "local", FailingNodes: 2, LastResult: &wasmv1.ScheduleResult{ReturnCode: 1,
				Message: "failing since 2026-12-01T10:00:00Z: boom", Node: "a"}}, {Name: "other"}}},
		{"hosts of an older generation or not Ready do not count", map[string]wasmv1.HostPlugin{
			"a": entry(1, wasmv1.NodePhaseReady, boom), "b": entry(2, wasmv1.NodePhaseFailed, boom)},
			[]wasmv1.ScheduleStatus{{Name: "local"}, {Name: "other"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := NodeScheduleStatus(spec, 2, tc.reports); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("NodeScheduleStatus = %+v, want %+v", got, tc.want)
			}
		})
	}
}
