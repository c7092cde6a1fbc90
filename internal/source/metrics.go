package source

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Fetcher fetches modules from every source type. The zero value is ready to
// use and records no metrics.
type Fetcher struct {
	// Metrics, when set, records bytes, durations and failures per source
	// type.
	Metrics *Metrics
	// Guard, when set, limits the hosts and addresses HTTP and OCI fetches reach. Nil: no checks, for
	// library use; the controller always sets one.
	Guard *Guard
}

// Metrics are the fetch metrics, labelled by source type ("http", "oci",
// "configMap"):
//
//	wasm_operator_fetch_bytes_total{source}             bytes of modules fetched
//	wasm_operator_fetch_duration_seconds{source}        time per fetch, retries included
//	wasm_operator_fetch_failures_total{source,reason}   failed fetches; reason is one of
//	    not_found, too_large, unauthorized, not_wasm, invalid, transient, error
type Metrics struct {
	bytes    *prometheus.CounterVec
	duration *prometheus.HistogramVec
	failures *prometheus.CounterVec
}

// NewMetrics creates the fetch metrics and registers them on reg
// (controller-runtime's metrics.Registry in the manager, a fresh
// prometheus.NewRegistry in tests). Registering twice on the same registry
// returns metrics backed by the collectors already registered.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wasm_operator_fetch_bytes_total",
			Help: "Bytes of WebAssembly modules fetched, by source type.",
		}, []string{"source"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "wasm_operator_fetch_duration_seconds",
			Help:    "Time taken by a module fetch including its retries, by source type.",
			Buckets: []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300},
		}, []string{"source"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wasm_operator_fetch_failures_total",
			Help: "Failed module fetches, by source type and reason.",
		}, []string{"source", "reason"}),
	}
	var err error
	if m.bytes, err = register(reg, m.bytes); err != nil {
		return nil, err
	}
	if m.duration, err = register(reg, m.duration); err != nil {
		return nil, err
	}
	if m.failures, err = register(reg, m.failures); err != nil {
		return nil, err
	}
	return m, nil
}

func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, err
	}
	return c, nil
}

// FailureReason maps a fetch error to the reason label of
// wasm_operator_fetch_failures_total.
func FailureReason(err error) string {
	switch {
	case errors.Is(err, ErrNotFound):
		return "not_found"
	case errors.Is(err, ErrTooLarge):
		return "too_large"
	case errors.Is(err, ErrUnauthorized):
		return "unauthorized"
	case errors.Is(err, ErrNotWasm):
		return "not_wasm"
	case errors.Is(err, ErrInvalid):
		return "invalid"
	case IsTransient(err):
		return "transient"
	default:
		return "error"
	}
}

func (f *Fetcher) observe(source string, start time.Time, a *Artifact, err error) {
	if f == nil || f.Metrics == nil {
		return
	}
	m := f.Metrics
	m.duration.WithLabelValues(source).Observe(time.Since(start).Seconds())
	if err != nil {
		m.failures.WithLabelValues(source, FailureReason(err)).Inc()
		return
	}
	m.bytes.WithLabelValues(source).Add(float64(len(a.Data)))
}
