package host

import (
	"reflect"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	wasmv1 "github.com/wasm-operator/wasm-operator/api/v1alpha1"
)

func TestFailingSchedules(t *testing.T) {
	t1 := &metav1.Time{Time: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)}
	t2 := &metav1.Time{Time: t1.Add(time.Minute)}
	ran := func(name string, at *metav1.Time, rc int32, msg string) wasmv1.ScheduleStatus {
		return wasmv1.ScheduleStatus{Name: name, LastScheduleTime: at, LastResult: &wasmv1.ScheduleResult{ReturnCode: rc, Message: msg}}
	}
	long := string(make([]byte, 1000))
	for _, tc := range []struct {
		name     string
		statuses []wasmv1.ScheduleStatus
		prev     []wasmv1.HostScheduleFailure
		want     []wasmv1.HostScheduleFailure
	}{
		{"none ran", nil, nil, nil},
		{"successes are not listed", []wasmv1.ScheduleStatus{ran("a", t1, 0, "")}, nil, nil},
		{"a status without a result", []wasmv1.ScheduleStatus{{Name: "a"}}, nil, nil},
		{"starts failing", []wasmv1.ScheduleStatus{ran("a", t1, 1, "boom"), ran("b", t1, 0, "")}, nil,
			[]wasmv1.HostScheduleFailure{{Name: "a", ReturnCode: 1, Message: "boom", Since: t1}}},
		{"an error text with return code 0 is a failure", []wasmv1.ScheduleStatus{ran("a", t1, 0, "set an error")}, nil,
			[]wasmv1.HostScheduleFailure{{Name: "a", ReturnCode: 0, Message: "set an error", Since: t1}}},
		{"keeps failing with another text: since and message stay", []wasmv1.ScheduleStatus{ran("a", t2, 1, "boom at 10:01")},
			[]wasmv1.HostScheduleFailure{{Name: "a", ReturnCode: 1, Message: "boom at 10:00", Since: t1}},
			[]wasmv1.HostScheduleFailure{{Name: "a", ReturnCode: 1, Message: "boom at 10:00", Since: t1}}},
		{"fails with another return code: the new message", []wasmv1.ScheduleStatus{ran("a", t2, -1, "timed out")},
			[]wasmv1.HostScheduleFailure{{Name: "a", ReturnCode: 1, Message: "boom", Since: t1}},
			[]wasmv1.HostScheduleFailure{{Name: "a", ReturnCode: -1, Message: "timed out", Since: t1}}},
		{"recovers", []wasmv1.ScheduleStatus{ran("a", t2, 0, "")},
			[]wasmv1.HostScheduleFailure{{Name: "a", ReturnCode: 1, Message: "boom", Since: t1}}, nil},
		{"a long message is cut", []wasmv1.ScheduleStatus{ran("a", t1, 2, long)}, nil,
			[]wasmv1.HostScheduleFailure{{Name: "a", ReturnCode: 2, Message: long[:253] + "...", Since: t1}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := FailingSchedules(tc.statuses, tc.prev); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("FailingSchedules = %+v, want %+v", got, tc.want)
			}
		})
	}
}
