package scheduler

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	wasmv1 "github.com/wasm-operator/wasm-operator/api/v1alpha1"
)

func TestNextStatus(t *testing.T) {
	t1, t2 := base.Add(time.Minute), base.Add(2*time.Minute)
	ok := Result{Node: "node-a", Duration: time.Second}
	bad := Result{ReturnCode: 1, Message: strings.Repeat("x", 5000), Node: "node-b"}

	// A success, then a failure: lastSuccessfulTime stays at the success, lastResult is the failure, cut.
	st := nextStatus(wasmv1.ScheduleStatus{}, "a", t1, ok, true)
	st = nextStatus(st, "a", t2, bad, true)
	if st.Name != "a" || !st.LastScheduleTime.Time.Equal(t2) || !st.LastSuccessfulTime.Time.Equal(t1) ||
		st.LastResult.ReturnCode != 1 || len([]rune(st.LastResult.Message)) != MaxMessage || st.LastResult.Node != "node-b" {
		t.Fatalf("after a failure: %+v %+v", st, st.LastResult)
	}

	// Under Allow, the run of an older tick that ends last moves neither lastScheduleTime nor lastResult.
	older := nextStatus(st, "a", t1, ok, false)
	if !older.LastScheduleTime.Time.Equal(t2) || older.LastResult.ReturnCode != 1 || !older.LastSuccessfulTime.Time.Equal(t1) {
		t.Fatalf("after an older run: %+v %+v", older, older.LastResult)
	}

	// The input is not changed (it is the Runner's copy of the status).
	in := wasmv1.ScheduleStatus{Name: "a", LastScheduleTime: &metav1.Time{Time: t1}}
	_ = nextStatus(in, "a", t2, ok, true)
	if !in.LastScheduleTime.Time.Equal(t1) || in.LastResult != nil {
		t.Fatal("nextStatus changed its input")
	}
}
