package controllers

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"

	wasmv1 "github.com/wasm-operator/wasm-operator/api/v1alpha1"
	"github.com/wasm-operator/wasm-operator/internal/certs"
	"github.com/wasm-operator/wasm-operator/internal/hostcontract"
	"github.com/wasm-operator/wasm-operator/internal/scheduler"
)

// +kubebuilder:rbac:groups=wasm-operator.dev,resources=wasmplugins/call,verbs=create

// ClusterSchedules fires the Cluster schedules of every plugin on the leader: each tick once, through the
// call API of one live host that reports the plugin Ready at its generation, with the controller's own
// token; a host that does not answer is tried once on another (internal/scheduler).
type ClusterSchedules struct {
	// Runner fires the ticks; made by NewClusterSchedules.
	Runner *scheduler.Runner
	// ran receives the plugins whose schedules ran, to reconcile them and write their status.
	ran chan event.GenericEvent
}

// HostCallOptions say how the controller calls hosts for Cluster schedules.
type HostCallOptions struct {
	// CAFile is the PEM bundle the hosts' serving certificates chain to (the chart's host CA ConfigMap).
	CAFile string
	// ServerName is the name the hosts' certificate is for (the host Service's DNS name), checked although
	// the controller dials each host's pod address.
	ServerName string
	// Roots, when set, returns the pool trusted instead of CAFile's, read at each connection: the CA
	// bundle the controller's own signer publishes (nil until the first: the connection fails).
	Roots func() *x509.CertPool
	// TokenFile holds a token of the hosts' audience for the controller's ServiceAccount (a projected
	// serviceAccountToken, which the kubelet rotates); read at each call.
	TokenFile string
}

// NewClusterSchedules makes the Cluster schedule runner of the reconciler r: its targets are read from the
// WasmHosts r watches, its results reach status through reconciles, and failures are Warning Events.
func NewClusterSchedules(r *WasmPluginReconciler, o HostCallOptions, opts scheduler.Options) (*ClusterSchedules, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: o.ServerName}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if os.IsNotExist(err) {
			// The hosts' TLS Secret has no ca.crt (a certificate signed by a public CA): the system's roots.
			pem = nil
		} else if err != nil {
			return nil, fmt.Errorf("read the hosts' CA: %w", err)
		}
		if pem != nil {
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("the hosts' CA file %s holds no PEM certificate", o.CAFile)
			}
			tr.TLSClientConfig.RootCAs = pool
		}
	}
	if o.Roots != nil {
		tr.TLSClientConfig = dynamicRoots(o.Roots, o.ServerName)
	}
	cs := &ClusterSchedules{ran: make(chan event.GenericEvent, 1024)}
	firer := &scheduler.ClusterFirer{
		Targets: r.scheduleTargets,
		Client:  &http.Client{Transport: tr},
		Token: func(context.Context) (string, error) {
			if o.TokenFile == "" {
				return "", fmt.Errorf("the controller has no token for the hosts' call API: set --host-token-file " +
					"(the chart projects a serviceAccountToken of the hosts' audience)")
			}
			b, err := os.ReadFile(o.TokenFile)
			if err != nil {
				return "", fmt.Errorf("read the token for the hosts' call API: %w", err)
			}
			return strings.TrimSpace(string(b)), nil
		},
	}
	opts.Scope, opts.LeaderElection, opts.Fire = wasmv1.ScheduleScopeCluster, true, firer.Fire
	opts.Record = func(key types.NamespacedName, _ wasmv1.ScheduleStatus) {
		obj := &wasmv1.WasmPlugin{}
		obj.Namespace, obj.Name = key.Namespace, key.Name
		select {
		case cs.ran <- event.GenericEvent{Object: obj}:
		default: // a reconcile is pending for many plugins already; the next one writes all statuses
		}
	}
	var mu sync.Mutex
	opts.OnFailure = func(j scheduler.Job, res scheduler.Result) {
		if r.Recorder == nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		obj := &wasmv1.WasmPlugin{}
		if err := r.Get(context.Background(), j.Plugin, obj); err != nil {
			return
		}
		node := res.Node
		if node == "" {
			node = "no host"
		}
		r.Recorder.Eventf(obj, nil, corev1.EventTypeWarning, "ScheduleFailed", "Schedule",
			"schedule %s (tick %s) on %s: return code %d: %s", j.Schedule, j.Tick.UTC().Format(time.RFC3339), node, res.ReturnCode, res.Message)
	}
	runner, err := scheduler.New(opts)
	if err != nil {
		return nil, err
	}
	cs.Runner = runner
	return cs, nil
}

// scheduleTargets lists the live hosts that report the plugin Ready at generation, with their call API.
func (r *WasmPluginReconciler) scheduleTargets(ctx context.Context, key types.NamespacedName, generation int64) ([]scheduler.Target, error) {
	hosts, err := r.hosts.get(ctx)
	if err != nil {
		return nil, err
	}
	live := make(map[string]bool, len(hosts))
	for _, h := range hosts {
		live[h.Node] = true
	}
	var list wasmv1.WasmHostList
	if err := r.List(ctx, &list, client.MatchingFields{indexHostPlugin: hostcontract.PluginKey(key)}, client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("list host reports: %w", err)
	}
	var out []scheduler.Target
	for i := range list.Items {
		h := &list.Items[i]
		if !live[h.Spec.NodeName] || h.Status.Endpoint == "" {
			continue
		}
		for _, p := range h.Status.Plugins {
			if p.Namespace == key.Namespace && p.Name == key.Name && p.Phase == wasmv1.NodePhaseReady && p.Generation == generation {
				out = append(out, scheduler.Target{Node: h.Spec.NodeName, URL: h.Status.Endpoint})
			}
		}
	}
	return out, nil
}

// syncSchedules gives the plugin's Cluster schedules to the runner (a stalled plugin's are stopped: nothing
// can serve its generation) and puts their last results into the status.
// Node schedules' status comes from the hosts' reports.
func (r *WasmPluginReconciler) syncSchedules(ctx context.Context, obj *wasmv1.WasmPlugin, o outcome, reports map[string]wasmv1.HostPlugin) {
	st := NodeScheduleStatus(obj.Spec.Schedules, obj.Generation, reports)
	if r.Schedules != nil {
		key := client.ObjectKeyFromObject(obj)
		if o.Stall != nil || len(obj.Spec.Schedules) == 0 {
			r.Schedules.Runner.Remove(key)
		} else if err := r.Schedules.Runner.Set(key, obj.Generation, obj.Spec.Suspend, obj.Spec.Schedules, obj.Status.Schedules); err != nil {
			// CheckSpec stalls the plugin for the same reason at validation; nothing more to say here.
			_ = err
		}
		st = append(st, r.Schedules.Runner.Statuses(key)...)
	}
	if len(st) > 0 || len(obj.Spec.Schedules) == 0 {
		obj.Status.Schedules = mergeScheduleStatus(obj.Status.Schedules, st, obj.Spec.Schedules)
	}
}

// NodeScheduleStatus sums up what the hosts report of the plugin's Node schedules: for each, how many of
// the hosts serving generation say its last run failed, and the failure of the first of them by node name
// as lastResult (none while no host fails). Hosts report failures, not runs, so a Node schedule's status
// has no lastScheduleTime: each host's runs are in its metrics.
func NodeScheduleStatus(spec []wasmv1.Schedule, generation int64, reports map[string]wasmv1.HostPlugin) []wasmv1.ScheduleStatus {
	nodes := make([]string, 0, len(reports))
	for n := range reports {
		nodes = append(nodes, n)
	}
	slices.Sort(nodes)
	var out []wasmv1.ScheduleStatus
	for _, s := range spec {
		if s.GetScope() != wasmv1.ScheduleScopeNode {
			continue
		}
		st := wasmv1.ScheduleStatus{Name: s.Name}
		for _, n := range nodes {
			e := reports[n]
			if e.Generation != generation || e.Phase != wasmv1.NodePhaseReady {
				continue
			}
			for _, f := range e.FailingSchedules {
				if f.Name != s.Name {
					continue
				}
				st.FailingNodes++
				if st.LastResult == nil {
					msg := f.Message
					if f.Since != nil {
						msg = fmt.Sprintf("failing since %s: %s", f.Since.UTC().Format(time.RFC3339), msg)
					}
					st.LastResult = &wasmv1.ScheduleResult{ReturnCode: f.ReturnCode, Message: msg, Node: n}
				}
			}
		}
		out = append(out, st)
	}
	return out
}

// mergeScheduleStatus keeps, for each schedule still in the spec, the runner's status when it has one and
// the stored one otherwise (a schedule that has not run under this leader yet), in spec order.
func mergeScheduleStatus(stored, current []wasmv1.ScheduleStatus, spec []wasmv1.Schedule) []wasmv1.ScheduleStatus {
	by := map[string]wasmv1.ScheduleStatus{}
	for _, s := range stored {
		by[s.Name] = s
	}
	for _, s := range current {
		by[s.Name] = s
	}
	var out []wasmv1.ScheduleStatus
	for _, s := range spec {
		if st, ok := by[s.Name]; ok {
			out = append(out, st)
		}
	}
	return out
}

func (r *WasmPluginReconciler) forgetSchedules(key types.NamespacedName) {
	if r.Schedules != nil {
		r.Schedules.Runner.Remove(key)
	}
}

// dynamicRoots is a client configuration verifying the server's chain for serverName against the pool
// roots returns at each handshake, so a CA bundle that changes is trusted without a restart.
func dynamicRoots(roots func() *x509.CertPool, serverName string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12, ServerName: serverName,
		// Verified below, against the current pool, as crypto/tls would against a fixed one.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return certs.VerifyChain(cs.PeerCertificates, roots(), serverName)
		},
	}
}
