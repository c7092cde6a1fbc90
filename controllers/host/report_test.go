package host

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	wasmv1 "github.com/wasm-operator/wasm-operator/api/v1alpha1"
)

func TestFailingSchedules(t *testing.T) {
	t1 := &metav1.Time{Time: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)}
	t2 := &metav1.Time{Time: t1.Add(time.Minute)}
	during := t1.Add(time.Minute)                      // within the hold of a failure since t1
	after := t1.Add(ScheduleFailureHold + time.Second) // past it
	ran := func(name string, at *metav1.Time, rc int32, msg string) wasmv1.ScheduleStatus {
		return wasmv1.ScheduleStatus{Name: name, LastScheduleTime: at, LastResult: &wasmv1.ScheduleResult{ReturnCode: rc, Message: msg}}
	}
	failing := func(rc int32, msg string) []wasmv1.HostScheduleFailure {
		return []wasmv1.HostScheduleFailure{{Name: "a", ReturnCode: rc, Message: msg, Since: t1}}
	}
	long := strings.Repeat("x", 1000)
	for _, tc := range []struct {
		name     string
		statuses []wasmv1.ScheduleStatus
		prev     []wasmv1.HostScheduleFailure
		now      time.Time
		want     []wasmv1.HostScheduleFailure
	}{
		{"none ran", nil, nil, during, nil},
		{"successes are not listed", []wasmv1.ScheduleStatus{ran("a", t1, 0, "")}, nil, during, nil},
		{"a status without a result", []wasmv1.ScheduleStatus{{Name: "a"}}, nil, during, nil},
		{"starts failing", []wasmv1.ScheduleStatus{ran("a", t1, 1, "boom"), ran("b", t1, 0, "")}, nil, during, failing(1, "boom")},
		{"an error text with return code 0 is a failure", []wasmv1.ScheduleStatus{ran("a", t1, 0, "set an error")}, nil, during,
			failing(0, "set an error")},
		{"keeps failing with another text: since and message stay", []wasmv1.ScheduleStatus{ran("a", t2, 1, "boom at 10:01")},
			failing(1, "boom at 10:00"), after, failing(1, "boom at 10:00")},
		{"fails with another return code after the hold: the new message", []wasmv1.ScheduleStatus{ran("a", t2, -1, "timed out")},
			failing(1, "boom"), after, failing(-1, "timed out")},
		{"another return code within the hold: unchanged", []wasmv1.ScheduleStatus{ran("a", t2, -1, "timed out")},
			failing(1, "boom"), during, failing(1, "boom")},
		{"recovers after the hold", []wasmv1.ScheduleStatus{ran("a", t2, 0, "")}, failing(1, "boom"), after, nil},
		{"recovers within the hold: still listed", []wasmv1.ScheduleStatus{ran("a", t2, 0, "")}, failing(1, "boom"), during,
			failing(1, "boom")},
		{"a long message is cut", []wasmv1.ScheduleStatus{ran("a", t1, 2, long)}, nil, during, failing(2, long[:253]+"...")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := FailingSchedules(tc.statuses, tc.prev, tc.now); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("FailingSchedules = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestTruncate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"line one\nline two\x00", 64, "line one line two "},
		{"bad \xff byte", 64, "bad ? byte"},
		{strings.Repeat("é", 10), 8, "éé..."}, // é is 2 bytes: the cut backs off to a character boundary
	} {
		got := truncate(tc.in, tc.n)
		if got != tc.want || !utf8.ValidString(got) || len(got) > tc.n {
			t.Errorf("truncate(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}

// A node's report stays bounded whatever its plugins' schedules do: many plugins with 16 failing
// schedules each, with long messages.
func TestBoundFailures(t *testing.T) {
	var entries []wasmv1.HostPlugin
	for p := range 100 {
		e := wasmv1.HostPlugin{Namespace: "ns", Name: fmt.Sprintf("p%d", p), Phase: wasmv1.NodePhaseReady}
		for s := range 16 {
			e.FailingSchedules = append(e.FailingSchedules, wasmv1.HostScheduleFailure{Name: fmt.Sprintf("s%d", s), ReturnCode: 1, Message: strings.Repeat("m", 256)})
		}
		entries = append(entries, e)
	}
	boundFailures(entries)
	n, bytes := 0, 0
	for _, e := range entries {
		for _, f := range e.FailingSchedules {
			n++
			bytes += len(f.Message)
		}
	}
	if n != maxReportFailures || bytes > maxReportFailureMessages {
		t.Errorf("%d failing schedules with %d bytes of messages, want %d and at most %d", n, bytes, maxReportFailures, maxReportFailureMessages)
	}
	if len(entries[0].FailingSchedules) != 16 || entries[0].FailingSchedules[0].Message == "" {
		t.Errorf("the first plugin's failures were cut: %+v", entries[0].FailingSchedules[0])
	}
}
