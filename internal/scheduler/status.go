package scheduler

import (
	"strings"
	"time"
	"unicode/utf8"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	wasmv1 "github.com/wasm-operator/wasm-operator/api/v1alpha1"
)

// MaxMessage is how many characters of a run's message status keeps: the CRD's maxLength of
// lastResult.message, which counts characters (code points), not bytes.
const MaxMessage = 1024

// CutMessage makes msg fit lastResult.message: valid UTF-8 (a plugin's error text is bytes, and the API
// server refuses invalid UTF-8) of at most MaxMessage characters, the last one "…" when it was cut, so
// that a reader knows there was more.
func CutMessage(msg string) string {
	msg = strings.ToValidUTF8(msg, "\uFFFD")
	if utf8.RuneCountInString(msg) <= MaxMessage {
		return msg
	}
	n := 0
	for i := range msg {
		if n == MaxMessage-1 {
			return msg[:i] + "…"
		}
		n++
	}
	return msg
}

// nextStatus is st after a run of tick with result res. lastScheduleTime only moves forward and
// lastSuccessfulTime is kept across failures; lastResult is replaced when newer says the run is for a tick
// not older than that of the result it holds (under concurrencyPolicy Allow an older run may end last).
func nextStatus(st wasmv1.ScheduleStatus, name string, tick time.Time, res Result, newer bool) wasmv1.ScheduleStatus {
	st = *st.DeepCopy()
	st.Name = name
	t := metav1.NewTime(tick)
	if st.LastScheduleTime == nil || st.LastScheduleTime.Before(&t) {
		st.LastScheduleTime = &t
	}
	if !res.Failed() && (st.LastSuccessfulTime == nil || st.LastSuccessfulTime.Before(&t)) {
		st.LastSuccessfulTime = &t
	}
	if newer {
		st.LastResult = &wasmv1.ScheduleResult{
			ReturnCode: res.ReturnCode,
			Message:    CutMessage(res.Message),
			Duration:   &metav1.Duration{Duration: res.Duration},
			Node:       cutBytes(res.Node, 253),
		}
	}
	return st
}

// cutBytes bounds a node name a FireFunc gave to the CRD's maxLength.
func cutBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}
