package host

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	wasmv1 "github.com/wasm-operator/wasm-operator/api/v1alpha1"
	"github.com/wasm-operator/wasm-operator/controllers"
	"github.com/wasm-operator/wasm-operator/internal/scheduler"
)

// +kubebuilder:rbac:groups=wasm-operator.dev,resources=wasmplugins,verbs=get;list;watch
// +kubebuilder:rbac:groups=wasm-operator.dev,resources=wasmhosts,verbs=get;create;update
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;create;update;delete
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create
// +kubebuilder:rbac:groups=certificates.k8s.io,resources=certificatesigningrequests,verbs=create;get;watch

// Defaults of the host's timing. The Lease is kubelet's: 40 s, renewed every 10 s, so that a thousand
// nodes cost a hundred renewals a second and nothing else in steady state.
const (
	DefaultLeaseDuration = 40 * time.Second
	// DefaultReportInterval is the least time between two writes of the host's WasmHost: changes of
	// many plugins within it (a rollout, a restart) make one write.
	DefaultReportInterval = time.Second
	// MaxReportInterval is what the interval between report writes grows to while changes keep coming.
	MaxReportInterval = 8 * time.Second
	// DefaultLoadingGrace is how long a load may take before the host reports the plugin Loading: a
	// version that loads within it goes from its old state to its new one in one report, so a restart or
	// a rollout never shows a short Loading (and Ready never flaps False) on the way.
	DefaultLoadingGrace = 5 * time.Second
)

// Loader loads and unloads the plugins placed on the node and tells their state; *Plugins is the real one,
// and `make bench-scale` stands an instant one in for it to simulate a thousand hosts.
type Loader interface {
	// Ensure makes the host serve obj's artifact with its spec; an error is retried with backoff.
	Ensure(ctx context.Context, obj *wasmv1.WasmPlugin) error
	// Unload stops serving the plugin.
	Unload(key types.NamespacedName) bool
	// State is the plugin's state; ok is false when the host has none.
	State(key types.NamespacedName) (st State, ok bool)
	// Keys lists the plugins the host has state for.
	Keys() []types.NamespacedName
}

// State is a host's state of one plugin, as its WasmHost entry reports it.
type State struct {
	Generation int64
	Digest     string
	Phase      wasmv1.NodePhase
	Message    string
	// Since is when the phase, digest or generation last changed.
	Since time.Time
}

// Reconciler keeps the plugins placed on one node loaded, reports them in the node's WasmHost, and holds
// the node's Lease, by which the controller counts the host as live.
type Reconciler struct {
	client.Client
	// APIReader reads the Lease and the WasmHost from the API server, not a cache.
	APIReader client.Reader
	// Node is the name of the node this host runs on.
	Node string
	// Identity names this host process in the Lease and the report: its pod's name. Two processes for
	// one node (a surge pod beside the old one) must have different identities.
	Identity string
	// Endpoint is the base URL of this host's call API, published in the report.
	Endpoint string
	// Namespace holds the host's Lease (the operator's namespace).
	Namespace string
	// Loader loads the plugins.
	Loader Loader
	// LeaseDuration is how long the Lease stays valid without renewal; it is renewed every quarter of it.
	LeaseDuration time.Duration
	// ReportInterval is the least time between two report writes; 0 means DefaultReportInterval.
	ReportInterval time.Duration
	// LoadingGrace is how long a load may last before it is reported; 0 means DefaultLoadingGrace.
	LoadingGrace time.Duration
	// Name names the controller; empty means "host". Simulated hosts of one process need distinct names.
	Name string
	// Schedules runs the Node schedules of the plugins this host serves; nil runs none.
	Schedules *scheduler.Runner

	lease  leaseKeeper
	report reporter
}

// SetupWithManager registers the reconciler, the Lease keeper and the reporter.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.LeaseDuration == 0 {
		r.LeaseDuration = DefaultLeaseDuration
	}
	if r.ReportInterval == 0 {
		r.ReportInterval = DefaultReportInterval
	}
	if r.LoadingGrace == 0 {
		r.LoadingGrace = DefaultLoadingGrace
	}
	if r.APIReader == nil {
		r.APIReader = mgr.GetAPIReader()
	}
	if r.Identity == "" {
		return errors.New("host: an identity is required (the pod's name)")
	}
	r.lease = leaseKeeper{r: r}
	r.report = reporter{r: r, dirty: make(chan struct{}, 1)}
	name := r.Name
	if name == "" {
		name = "host"
	}
	isOwnNode := predicate.NewPredicateFuncs(func(o client.Object) bool { return o.GetName() == r.Node })
	if err := ctrl.NewControllerManagedBy(mgr).
		Named(name).
		For(&wasmv1.WasmPlugin{}, builder.WithPredicates(relevant)).
		WithOptions(controller.Options{MaxConcurrentReconciles: 4, SkipNameValidation: ptrTrue(r.Name != "")}).
		Watches(&corev1.Node{}, handler.EnqueueRequestsFromMapFunc(r.nodeChanged),
			builder.WithPredicates(isOwnNode)).
		Complete(r); err != nil {
		return err
	}
	if err := mgr.Add(&r.lease); err != nil {
		return err
	}
	if r.Schedules != nil {
		if err := mgr.Add(r.Schedules); err != nil {
			return err
		}
	}
	return mgr.Add(&r.report)
}

func ptrTrue(b bool) *bool {
	if !b {
		return nil
	}
	return &b
}

// relevant passes the WasmPlugin updates a host acts on: a new generation, a new artifact or a deletion.
// The controller's other status changes (counts, conditions) are left out, so they cost no host reconcile.
var relevant = predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
	o, n := e.ObjectOld.(*wasmv1.WasmPlugin), e.ObjectNew.(*wasmv1.WasmPlugin)
	return o.Generation != n.Generation || !n.DeletionTimestamp.Equal(o.DeletionTimestamp) ||
		!equality.Semantic.DeepEqual(o.Status.Artifact, n.Status.Artifact)
}}

// nodeChanged re-evaluates the placement of every plugin when the node's labels may have changed.
func (r *Reconciler) nodeChanged(ctx context.Context, _ client.Object) []reconcile.Request {
	var list wasmv1.WasmPluginList
	if err := r.List(ctx, &list); err != nil {
		return nil
	}
	return controllers.Requests(list.Items)
}

// placed reports whether the plugin's placement selects this host's node. A host whose Node object does not
// exist has no labels: it serves only plugins without a nodeSelector.
func (r *Reconciler) placed(ctx context.Context, obj *wasmv1.WasmPlugin) (bool, error) {
	var node corev1.Node
	if err := r.Get(ctx, types.NamespacedName{Name: r.Node}, &node); err != nil && !apierrors.IsNotFound(err) {
		return false, fmt.Errorf("read node %s: %w", r.Node, err)
	}
	return labels.SelectorFromSet(obj.Spec.Placement.GetNodeSelector()).Matches(labels.Set(node.Labels)), nil
}

// Reconcile loads, swaps or unloads one plugin; the reporter writes what changed.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	obj := &wasmv1.WasmPlugin{}
	if err := r.Get(ctx, req.NamespacedName, obj); err != nil {
		if apierrors.IsNotFound(err) {
			r.Loader.Unload(req.NamespacedName)
			r.removeSchedules(req.NamespacedName)
			r.report.changed()
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, err
	}
	placed, err := r.placed(ctx, obj)
	if err != nil {
		return ctrl.Result{}, err
	}
	if !obj.DeletionTimestamp.IsZero() || !placed {
		r.Loader.Unload(req.NamespacedName)
		r.removeSchedules(req.NamespacedName)
		r.report.changed()
		return ctrl.Result{}, nil
	}
	if obj.Status.Artifact == nil {
		return ctrl.Result{}, nil // the controller has no valid module for it yet
	}
	r.report.changed() // a load longer than the grace is reported Loading while it runs
	loadErr := r.Loader.Ensure(ctx, obj)
	r.report.changed()
	r.syncSchedules(ctx, obj)
	// A failed load is retried with backoff: the module may be stored again, or memory freed.
	return ctrl.Result{}, loadErr
}

// syncSchedules runs the plugin's Node schedules while it is Ready here at its generation, and only on the
// host that holds the node's Lease: during a surge the older host of the node leaves them to the newer.
func (r *Reconciler) syncSchedules(ctx context.Context, obj *wasmv1.WasmPlugin) {
	if r.Schedules == nil {
		return
	}
	key := types.NamespacedName{Namespace: obj.Namespace, Name: obj.Name}
	st, ok := r.Loader.State(key)
	if !ok || st.Phase != wasmv1.NodePhaseReady || st.Generation != obj.Generation || !r.lease.holds() {
		r.Schedules.Remove(key)
		return
	}
	if err := r.Schedules.Set(key, obj.Generation, obj.Spec.Suspend, obj.Spec.Schedules, nil); err != nil {
		ctrl.LoggerFrom(ctx).Info("a Node schedule cannot run", "plugin", key, "error", err.Error())
	}
}

func (r *Reconciler) removeSchedules(key types.NamespacedName) {
	if r.Schedules != nil {
		r.Schedules.Remove(key)
	}
}

// ScheduleRecorded is the Node schedules' scheduler.RecordFunc: the reporter looks whether a schedule
// started failing or recovered (and writes only then).
func (r *Reconciler) ScheduleRecorded(types.NamespacedName, wasmv1.ScheduleStatus) {
	r.report.changed()
}

// yielded stops the Node schedules of every plugin: another host of this node runs them now.
func (r *Reconciler) yielded() {
	if r.Schedules == nil {
		return
	}
	for _, k := range r.Loader.Keys() {
		r.Schedules.Remove(k)
	}
}

// Ready reports whether the host holds its node's Lease, so the controller counts it.
func (r *Reconciler) Ready() error {
	if !r.lease.registered.Load() {
		return fmt.Errorf("host %s: not yet registered", r.Node)
	}
	return nil
}

// Shutdown leaves the cluster cleanly, when this host still holds its node's Lease: it clears its report
// and deletes the Lease, so the controller drops the node at once instead of waiting for the Lease to
// expire. A host that a newer one of the same node replaced (a surge pod took the Lease) touches neither.
// Call it after the manager stopped, so that no reconcile or report runs behind it.
func (r *Reconciler) Shutdown(ctx context.Context) error {
	if !r.lease.holds() {
		return nil
	}
	var errs []error
	if err := r.report.clear(ctx); err != nil {
		errs = append(errs, fmt.Errorf("clear the host report: %w", err))
	}
	if err := r.lease.release(ctx); err != nil {
		errs = append(errs, fmt.Errorf("release host lease: %w", err))
	}
	return errors.Join(errs...)
}
