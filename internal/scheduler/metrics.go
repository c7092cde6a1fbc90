package scheduler

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"

	wasmv1 "github.com/wasm-operator/wasm-operator/api/v1alpha1"
)

// Metric names; every series is labelled namespace, plugin, schedule and scope.
const (
	MetricRuns     = "wasm_operator_schedule_runs_total"
	MetricFailures = "wasm_operator_schedule_failures_total"
	MetricDuration = "wasm_operator_schedule_run_duration_seconds"
	MetricMissed   = "wasm_operator_schedule_missed_total"
)

// durationBuckets span a trivial function to the longest callTimeout (10m).
var durationBuckets = []float64{.005, .01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}

var labels = []string{"namespace", "plugin", "schedule", "scope"}

type metrics struct {
	runs, failures, missed *prometheus.CounterVec
	duration               *prometheus.HistogramVec
}

// newMetrics makes the metrics and registers them with reg (nil: none). A collector already registered
// is used instead of the new one, so that two Runners (one per scope) can share a registry.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricRuns, Help: "Runs of plugin schedules, by schedule.",
		}, labels),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricFailures, Help: "Runs of plugin schedules that failed: a non-zero return code, an error, or no host ran them.",
		}, labels),
		missed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricMissed, Help: "Ticks of plugin schedules that did not run: past startingDeadline, or skipped by concurrencyPolicy Forbid.",
		}, labels),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: MetricDuration, Help: "Duration of the runs of plugin schedules.", Buckets: durationBuckets,
		}, labels),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	if m.runs, err = register(reg, m.runs); err != nil {
		return nil, err
	}
	if m.failures, err = register(reg, m.failures); err != nil {
		return nil, err
	}
	if m.missed, err = register(reg, m.missed); err != nil {
		return nil, err
	}
	if m.duration, err = register(reg, m.duration); err != nil {
		return nil, err
	}
	return m, nil
}

func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, fmt.Errorf("register schedule metrics: %w", err)
}

// forgetPlugin deletes the series of a plugin's schedules of scope, so that a deleted plugin leaves none.
func (m *metrics) forgetPlugin(key types.NamespacedName, scope wasmv1.ScheduleScope) {
	l := prometheus.Labels{"namespace": key.Namespace, "plugin": key.Name, "scope": string(scope)}
	m.runs.DeletePartialMatch(l)
	m.failures.DeletePartialMatch(l)
	m.missed.DeletePartialMatch(l)
	m.duration.DeletePartialMatch(l)
}

// forgetSchedule deletes the series of one schedule (removed from the spec, or changed scope).
func (m *metrics) forgetSchedule(key types.NamespacedName, name string, scope wasmv1.ScheduleScope) {
	lv := []string{key.Namespace, key.Name, name, string(scope)}
	m.runs.DeleteLabelValues(lv...)
	m.failures.DeleteLabelValues(lv...)
	m.missed.DeleteLabelValues(lv...)
	m.duration.DeleteLabelValues(lv...)
}
