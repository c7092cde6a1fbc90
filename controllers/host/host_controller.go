package host

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
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
)

// +kubebuilder:rbac:groups=wasm-operator.dev,resources=wasmplugins,verbs=get;list;watch
// +kubebuilder:rbac:groups=wasm-operator.dev,resources=wasmplugins/status,verbs=get;patch
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;create;update;delete
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create

// Defaults of the host's timing.
const (
	DefaultLeaseDuration  = 15 * time.Second
	DefaultStatusInterval = 5 * time.Second
)

// Reconciler keeps the plugins placed on one node loaded, reports each in its status.nodes entry, and holds
// the host's Lease, by which the controller counts the host as live.
type Reconciler struct {
	client.Client
	// Node is the name of the node this host runs on.
	Node string
	// Namespace holds the host's Lease (the operator's namespace).
	Namespace string
	// Plugins is the table of served plugins.
	Plugins *Plugins
	// LeaseDuration is how long the Lease stays valid without renewal; it is renewed every third of it.
	LeaseDuration time.Duration
	// StatusInterval is the least time between two writes of an entry whose only change is counters.
	StatusInterval time.Duration

	synced   atomic.Bool
	stopping atomic.Bool
	writeMu  sync.Mutex // serialises status entry writes
	// written holds when each plugin's entry was last written, to space out counter-only writes.
	mu      sync.Mutex
	written map[types.NamespacedName]time.Time
}

// SetupWithManager registers the reconciler, the Lease keeper and the status loop.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.LeaseDuration == 0 {
		r.LeaseDuration = DefaultLeaseDuration
	}
	if r.StatusInterval == 0 {
		r.StatusInterval = DefaultStatusInterval
	}
	isOwnNode := predicate.NewPredicateFuncs(func(o client.Object) bool { return o.GetName() == r.Node })
	if err := ctrl.NewControllerManagedBy(mgr).
		Named("host").
		For(&wasmv1.WasmPlugin{}, builder.WithPredicates(r.relevant())).
		WithOptions(controller.Options{MaxConcurrentReconciles: 4}).
		Watches(&corev1.Node{}, handler.EnqueueRequestsFromMapFunc(r.nodeChanged),
			builder.WithPredicates(isOwnNode)).
		Complete(r); err != nil {
		return err
	}
	return mgr.Add(&leaseKeeper{r: r})
}

// relevant passes the WasmPlugin updates a host acts on: a new generation, a new artifact, a deletion, or a
// change of this host's own entry made by someone else (its removal). Other hosts' counters are left out, so
// status traffic does not grow with the square of the number of nodes.
func (r *Reconciler) relevant() predicate.Predicate {
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		o, n := e.ObjectOld.(*wasmv1.WasmPlugin), e.ObjectNew.(*wasmv1.WasmPlugin)
		if o.Generation != n.Generation || !n.DeletionTimestamp.Equal(o.DeletionTimestamp) ||
			!equality.Semantic.DeepEqual(o.Status.Artifact, n.Status.Artifact) {
			return true
		}
		oe, of := ownEntry(o.Status.Nodes, r.Node)
		ne, nf := ownEntry(n.Status.Nodes, r.Node)
		return of != nf || !countersOnly(oe, ne)
	}}
}

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

// Reconcile loads, swaps or unloads one plugin and writes its entry.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	obj := &wasmv1.WasmPlugin{}
	if err := r.Get(ctx, req.NamespacedName, obj); err != nil {
		if apierrors.IsNotFound(err) {
			r.Plugins.Unload(req.NamespacedName)
			r.forget(req.NamespacedName)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, err
	}
	placed, err := r.placed(ctx, obj)
	if err != nil {
		return ctrl.Result{}, err
	}
	if !obj.DeletionTimestamp.IsZero() || !placed {
		r.Plugins.Unload(req.NamespacedName)
		if _, found := ownEntry(obj.Status.Nodes, r.Node); found {
			return ctrl.Result{}, r.removeEntry(ctx, req.NamespacedName)
		}
		r.forget(req.NamespacedName)
		return ctrl.Result{}, nil
	}
	if obj.Status.Artifact == nil {
		return ctrl.Result{}, nil // the controller has no valid module for it yet
	}
	loadErr := r.Plugins.Ensure(ctx, obj)
	if err := r.writeEntry(ctx, req.NamespacedName, false); err != nil {
		return ctrl.Result{}, err
	}
	// A failed load is retried with backoff: the module may be stored again, or memory freed.
	return ctrl.Result{}, loadErr
}

// writeEntry applies the plugin's entry when what the object holds for this node differs from it (the
// entry was never written, or was removed, for instance by the controller while this host's Lease had
// expired), or, when only its counters differ, at most every StatusInterval (periodic writes only). Writes are
// serialised, so the reconciler and the status loop never race on one entry.
func (r *Reconciler) writeEntry(ctx context.Context, key types.NamespacedName, periodic bool) error {
	r.writeMu.Lock()
	defer r.writeMu.Unlock()
	e, ok := r.Plugins.Entry(key)
	if !ok || r.stopping.Load() {
		return nil
	}
	e.Name = r.Node
	var obj wasmv1.WasmPlugin
	if err := r.Get(ctx, key, &obj); err != nil {
		return client.IgnoreNotFound(err)
	}
	now := time.Now()
	if cur, found := ownEntry(obj.Status.Nodes, r.Node); found {
		if sameEntry(cur, e) {
			return nil
		}
		r.mu.Lock()
		last := r.written[key]
		r.mu.Unlock()
		if countersOnly(cur, e) && (!periodic || now.Sub(last) < r.StatusInterval) {
			return nil
		}
	}
	t := metav1.NewTime(now)
	e.LastUpdateTime = &t
	if err := r.apply(ctx, key, []any{entryMap(e)}); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("write status entry: %w", err)
	}
	r.mu.Lock()
	if r.written == nil {
		r.written = map[types.NamespacedName]time.Time{}
	}
	r.written[key] = now
	r.mu.Unlock()
	return nil
}

func ownEntry(nodes []wasmv1.NodeStatus, node string) (wasmv1.NodeStatus, bool) {
	for _, n := range nodes {
		if n.Name == node {
			return n, true
		}
	}
	return wasmv1.NodeStatus{}, false
}

// sameEntry compares entries without their time.
func sameEntry(a, b wasmv1.NodeStatus) bool {
	a.LastUpdateTime, b.LastUpdateTime = nil, nil
	return a == b
}

// countersOnly reports whether a and b differ only in their counters and pool figures.
func countersOnly(a, b wasmv1.NodeStatus) bool {
	return a.Name == b.Name && a.Digest == b.Digest && a.Phase == b.Phase && a.Message == b.Message
}

func entryMap(e wasmv1.NodeStatus) map[string]any {
	m := map[string]any{"name": e.Name, "phase": string(e.Phase), "idle": int64(e.Idle), "busy": int64(e.Busy),
		"calls": e.Calls, "failures": e.Failures}
	if e.Digest != "" {
		m["digest"] = e.Digest
	}
	if e.Message != "" {
		m["message"] = e.Message
	}
	if e.LastUpdateTime != nil {
		m["lastUpdateTime"] = e.LastUpdateTime.UTC().Format(time.RFC3339)
	}
	return m
}

// apply writes this host's entries of status.nodes under its own field manager: the entries of other hosts
// and the controller's fields are left alone, and an empty list removes this host's entry.
func (r *Reconciler) apply(ctx context.Context, key types.NamespacedName, nodes []any) error {
	return controllers.ApplyNodeEntries(ctx, r.Client, key, r.Node, nodes)
}

func (r *Reconciler) removeEntry(ctx context.Context, key types.NamespacedName) error {
	r.writeMu.Lock()
	defer r.writeMu.Unlock()
	if err := r.apply(ctx, key, []any{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("remove status entry: %w", err)
	}
	r.forget(key)
	return nil
}

func (r *Reconciler) forget(key types.NamespacedName) {
	r.mu.Lock()
	delete(r.written, key)
	r.mu.Unlock()
}

// Ready reports whether the host has registered its Lease, so the controller counts it.
func (r *Reconciler) Ready() error {
	if !r.synced.Load() {
		return fmt.Errorf("host %s: not yet registered", r.Node)
	}
	return nil
}

// leaseKeeper holds the host's Lease and writes the counters of status entries periodically.
type leaseKeeper struct{ r *Reconciler }

// NeedLeaderElection is false: every host runs its own.
func (k *leaseKeeper) NeedLeaderElection() bool { return false }

func (k *leaseKeeper) Start(ctx context.Context) error {
	r := k.r
	log := ctrl.LoggerFrom(ctx).WithValues("node", r.Node)
	if err := k.renew(ctx); err != nil {
		return fmt.Errorf("register host lease: %w", err)
	}
	r.synced.Store(true)
	renew := time.NewTicker(r.LeaseDuration / 3)
	defer renew.Stop()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-renew.C:
			if err := k.renew(ctx); err != nil {
				log.Error(err, "renew host lease")
			}
		case <-tick.C:
			r.Plugins.UpdateGauges()
			for _, key := range r.Plugins.Keys() {
				if err := r.writeEntry(ctx, key, true); err != nil {
					log.Error(err, "write status entry", "plugin", key)
				}
			}
		}
	}
}

func (k *leaseKeeper) renew(ctx context.Context) error {
	r := k.r
	now := metav1.NewMicroTime(time.Now())
	name := controllers.HostLeasePrefix + r.Node
	var l coordinationv1.Lease
	err := r.Get(ctx, types.NamespacedName{Namespace: r.Namespace, Name: name}, &l)
	spec := coordinationv1.LeaseSpec{HolderIdentity: ptr.To(r.Node),
		LeaseDurationSeconds: ptr.To(int32(r.LeaseDuration / time.Second)), RenewTime: &now}
	if apierrors.IsNotFound(err) {
		spec.AcquireTime = &now
		l = coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: r.Namespace,
			Labels: map[string]string{controllers.HostLeaseLabel: r.Node}}, Spec: spec}
		return r.Create(ctx, &l)
	}
	if err != nil {
		return err
	}
	if l.Spec.AcquireTime != nil && ptr.Deref(l.Spec.HolderIdentity, "") == r.Node {
		spec.AcquireTime = l.Spec.AcquireTime
	} else {
		spec.AcquireTime = &now
	}
	l.Spec = spec
	if l.Labels == nil {
		l.Labels = map[string]string{}
	}
	l.Labels[controllers.HostLeaseLabel] = r.Node
	return r.Update(ctx, &l)
}

// Shutdown removes this host's status entries and deletes its Lease, so the controller drops the node at
// once instead of waiting for the Lease to expire. Call it after the manager stopped, so that no reconcile
// writes an entry again behind it.
func (r *Reconciler) Shutdown(ctx context.Context) error {
	r.stopping.Store(true)
	keys := r.Plugins.Keys()
	r.mu.Lock()
	for key := range r.written {
		if r.Plugins.get(key) == nil {
			keys = append(keys, key)
		}
	}
	r.mu.Unlock()
	var errs []error
	for _, key := range keys {
		if err := r.removeEntry(ctx, key); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", key, err))
		}
	}
	l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: controllers.HostLeasePrefix + r.Node, Namespace: r.Namespace}}
	if err := r.Delete(ctx, l); err != nil && !apierrors.IsNotFound(err) {
		errs = append(errs, fmt.Errorf("release host lease: %w", err))
	}
	return errors.Join(errs...)
}
