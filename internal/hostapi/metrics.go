package hostapi

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Outcomes of a call, the values of the outcome label of wasm_operator_host_calls_total.
const (
	OutcomeOK           = "ok"
	OutcomePluginError  = "plugin_error"
	OutcomeTimeout      = "timeout"
	OutcomeSaturated    = "saturated"
	OutcomeTooLarge     = "too_large"
	OutcomeNotFound     = "not_found"
	OutcomeUnauthorized = "unauthorized"
	OutcomeForbidden    = "forbidden"
	// OutcomeThrottled: the caller's address made too many token reviews; 429 without a review.
	OutcomeThrottled = "throttled"
	// OutcomeCanceled: the caller went away before the answer; no status reached it.
	OutcomeCanceled = "canceled"
	OutcomeError    = "error"
)

// Metrics are the node host's Prometheus metrics. The server counts calls and their latency; the
// host sets the pool gauges and observes loads. Every vector is labelled by the plugin's
// namespace and name.
type Metrics struct {
	// Calls counts call requests: wasm_operator_host_calls_total{namespace,name,function,outcome}.
	// A request for a plugin not served on this node is counted with empty namespace and name,
	// and function is set only once the request reached the Invoker (see RATIONALE.md), so that
	// callers cannot grow the number of series at will.
	Calls *prometheus.CounterVec
	// CallDuration observes the latency of the calls that reached the Invoker, from the request
	// to the answer: wasm_operator_host_call_duration_seconds{namespace,name,function}.
	CallDuration *prometheus.HistogramVec
	// PoolIdle is the number of idle instances: wasm_operator_host_pool_idle_instances.
	PoolIdle *prometheus.GaugeVec
	// PoolBusy is the number of instances running a call: wasm_operator_host_pool_busy_instances.
	PoolBusy *prometheus.GaugeVec
	// PoolWaiting is the number of calls waiting for an instance: wasm_operator_host_pool_waiting_calls.
	PoolWaiting *prometheus.GaugeVec
	// CompileDuration observes module compilations, file cache hits included:
	// wasm_operator_host_compile_duration_seconds.
	CompileDuration *prometheus.HistogramVec
	// LoadDuration observes whole loads (read, verify, compile, first instance):
	// wasm_operator_host_load_duration_seconds.
	LoadDuration *prometheus.HistogramVec
	// LoadFailures counts loads that failed: wasm_operator_host_load_failures_total.
	LoadFailures *prometheus.CounterVec
}

var (
	// callBuckets span a trivial plugin served from a warm pool to a long callTimeout.
	callBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
	// loadBuckets span a file cache hit (milliseconds) to a cold compile of a large module.
	loadBuckets = []float64{.001, .005, .01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}
)

// NewMetrics makes the metrics and registers them with reg; a nil reg registers nothing.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	plugin := []string{"namespace", "name"}
	m := &Metrics{
		Calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wasm_operator_host_calls_total",
			Help: "Plugin call requests by plugin, function and outcome.",
		}, []string{"namespace", "name", "function", "outcome"}),
		CallDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "wasm_operator_host_call_duration_seconds",
			Help:    "Latency of plugin calls, from request to answer.",
			Buckets: callBuckets,
		}, []string{"namespace", "name", "function"}),
		PoolIdle: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wasm_operator_host_pool_idle_instances",
			Help: "Idle instances in the plugin's pool.",
		}, plugin),
		PoolBusy: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wasm_operator_host_pool_busy_instances",
			Help: "Instances of the plugin's pool running a call.",
		}, plugin),
		PoolWaiting: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wasm_operator_host_pool_waiting_calls",
			Help: "Calls waiting for an instance of the plugin's pool.",
		}, plugin),
		CompileDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "wasm_operator_host_compile_duration_seconds",
			Help:    "Time to compile a plugin's module, compilation cache hits included.",
			Buckets: loadBuckets,
		}, plugin),
		LoadDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "wasm_operator_host_load_duration_seconds",
			Help:    "Time to load a plugin: read and verify the module, compile it, start its first instance.",
			Buckets: loadBuckets,
		}, plugin),
		LoadFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wasm_operator_host_load_failures_total",
			Help: "Plugin loads that failed.",
		}, plugin),
	}
	if reg != nil {
		for _, c := range m.collectors() {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

func (m *Metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.Calls, m.CallDuration, m.PoolIdle, m.PoolBusy, m.PoolWaiting,
		m.CompileDuration, m.LoadDuration, m.LoadFailures}
}

// SetPool sets the pool gauges of a plugin.
func (m *Metrics) SetPool(namespace, name string, idle, busy, waiting int) {
	m.PoolIdle.WithLabelValues(namespace, name).Set(float64(idle))
	m.PoolBusy.WithLabelValues(namespace, name).Set(float64(busy))
	m.PoolWaiting.WithLabelValues(namespace, name).Set(float64(waiting))
}

// Forget deletes every series of a plugin, for when the host unloads it.
func (m *Metrics) Forget(namespace, name string) {
	l := prometheus.Labels{"namespace": namespace, "name": name}
	m.Calls.DeletePartialMatch(l)
	m.CallDuration.DeletePartialMatch(l)
	m.PoolIdle.Delete(l)
	m.PoolBusy.Delete(l)
	m.PoolWaiting.Delete(l)
	m.CompileDuration.Delete(l)
	m.LoadDuration.Delete(l)
	m.LoadFailures.Delete(l)
}
