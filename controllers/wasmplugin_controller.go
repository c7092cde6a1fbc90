package controllers

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	wasmv1 "github.com/wasm-operator/wasm-operator/api/v1alpha1"
	"github.com/wasm-operator/wasm-operator/internal/hostcontract"
	fetch "github.com/wasm-operator/wasm-operator/internal/source"
	"github.com/wasm-operator/wasm-operator/internal/store"
	"github.com/wasm-operator/wasm-operator/runtime"
)

// +kubebuilder:rbac:groups=wasm-operator.dev,resources=wasmplugins,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=wasm-operator.dev,resources=wasmplugins/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=wasm-operator.dev,resources=wasmplugins/finalizers,verbs=update
// +kubebuilder:rbac:groups=wasm-operator.dev,resources=wasmhosts,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=configmaps;secrets,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;list;watch;create;update;patch
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create

// Index keys of the field indexes the reconciler registers.
const (
	indexConfigMap = "spec.source.configMap.name"
	indexSecret    = "spec.source.secrets"
	// indexHostPlugin indexes WasmHosts by the plugins they report (hostcontract.PluginKey).
	indexHostPlugin = "status.plugins"
)

// DefaultReportCoalesce is how long the controller gathers host reports of a plugin before it reconciles
// it: a rollout to a thousand nodes, whose hosts report within seconds of each other, makes a few status
// writes instead of one per node.
const DefaultReportCoalesce = time.Second

// Client limits and parallelism of `manager controller`, above controller-runtime's defaults (20 QPS, burst
// 30, one reconcile at a time): bringing a plugin to Ready takes two status writes (the validated artifact,
// then the hosts' aggregate), so 500 plugins applied at once by a GitOps sync need 1000 writes, which at 20
// QPS take 50 s. Reconciles wait
// on fetches and compiles, so several run at once.
const (
	DefaultKubeAPIQPS   = 200
	DefaultKubeAPIBurst = 400
	DefaultConcurrency  = 8
)

// WasmPluginReconciler brings each WasmPlugin's module to a stored, validated artifact and computes its
// status from that and from what the node hosts report.
type WasmPluginReconciler struct {
	client.Client
	// APIReader reads Secrets and ConfigMap contents from the API server when a fetch needs them; the
	// cache holds only their metadata.
	APIReader client.Reader
	// Recorder emits Events on WasmPlugins.
	Recorder events.EventRecorder
	// Fetcher fetches modules from http, oci and configMap sources.
	Fetcher *fetch.Fetcher
	// Store is the module store on the shared cache.
	Store *store.Store
	// Engine compiles modules to validate them, filling the shared compiled cache for the hosts.
	Engine *runtime.Engine
	// HostNamespace is where the node hosts keep their Leases (the operator's namespace).
	HostNamespace string
	// MaxModuleBytes caps a fetched module; 0 means fetch.DefaultMaxBytes.
	MaxModuleBytes int64
	// MaxConcurrentReconciles bounds parallel reconciles; 0 means DefaultConcurrency.
	MaxConcurrentReconciles int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// ReportCoalesce is how long host reports are gathered before a reconcile; 0 means
	// DefaultReportCoalesce.
	ReportCoalesce time.Duration
	// Schedules fires the plugins' Cluster schedules; nil fires none.
	Schedules *ClusterSchedules

	fetches fetchCache
	modules moduleCache
	hosts   hostSet
	stalls  sync.Map // memoKey -> stallMemo
	// progress holds when a plugin's progress-only status was last written (memoKey -> time.Time).
	progress sync.Map
}

// SetupWithManager registers the reconciler, its indexes and its watches.
func (r *WasmPluginReconciler) SetupWithManager(mgr ctrl.Manager) error {
	ctx := context.Background()
	idx := mgr.GetFieldIndexer()
	if err := idx.IndexField(ctx, &wasmv1.WasmPlugin{}, indexConfigMap, func(o client.Object) []string {
		if cm := o.(*wasmv1.WasmPlugin).Spec.Source.ConfigMap; cm != nil {
			return []string{cm.Name}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("index configMap sources: %w", err)
	}
	if err := idx.IndexField(ctx, &wasmv1.WasmPlugin{}, indexSecret, func(o client.Object) []string {
		src := o.(*wasmv1.WasmPlugin).Spec.Source
		switch {
		case src.HTTP != nil && src.HTTP.SecretRef != nil:
			return []string{src.HTTP.SecretRef.Name}
		case src.OCI != nil && src.OCI.PullSecretRef != nil:
			return []string{src.OCI.PullSecretRef.Name}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("index secret references: %w", err)
	}
	if err := idx.IndexField(ctx, &wasmv1.WasmHost{}, indexHostPlugin, func(o client.Object) []string {
		ps := o.(*wasmv1.WasmHost).Status.Plugins
		out := make([]string, len(ps))
		for i, p := range ps {
			out[i] = hostcontract.PluginKey(types.NamespacedName{Namespace: p.Namespace, Name: p.Name})
		}
		return out
	}); err != nil {
		return fmt.Errorf("index host reports: %w", err)
	}
	r.hosts = hostSet{client: mgr.GetClient(), namespace: r.HostNamespace, now: r.now}
	if err := mgr.Add(&r.hosts); err != nil {
		return err
	}
	workers := r.MaxConcurrentReconciles
	if workers == 0 {
		workers = DefaultConcurrency
	}
	b := ctrl.NewControllerManagedBy(mgr)
	if r.Schedules != nil {
		if err := mgr.Add(r.Schedules.Runner); err != nil {
			return err
		}
		// A schedule that ran writes its result through a reconcile of its plugin.
		b = b.WatchesRawSource(source.Channel(r.Schedules.ran, &handler.EnqueueRequestForObject{}))
	}
	return b.
		For(&wasmv1.WasmPlugin{}, builder.WithPredicates(specOrStatusChanged)).
		// Metadata only: a change is noticed by its resourceVersion, and no Secret or ConfigMap content of
		// the cluster is held in memory.
		Watches(&corev1.ConfigMap{}, handler.EnqueueRequestsFromMapFunc(r.referencing(indexConfigMap)), builder.OnlyMetadata).
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.referencing(indexSecret)), builder.OnlyMetadata).
		// The host set (live Leases and their Nodes' labels) is watched by hostSet, which enqueues every
		// plugin when it changes: renewals, which change nothing, cost no reconcile.
		WatchesRawSource(source.Channel(r.hosts.events(), handler.EnqueueRequestsFromMapFunc(r.all))).
		// A host's report enqueues the plugins whose entry changed, after ReportCoalesce: reports of many
		// hosts within that time make one reconcile.
		Watches(&wasmv1.WasmHost{}, r.reportsChanged()).
		WithOptions(controller.Options{MaxConcurrentReconciles: workers}).
		Complete(r)
}

// specOrStatusChanged leaves out updates that change neither the spec, the status nor the deletion, such as
// a label's: a reconcile for it would read the cache from before its own status write and write the same
// status again.
var specOrStatusChanged = predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
	o, n := e.ObjectOld.(*wasmv1.WasmPlugin), e.ObjectNew.(*wasmv1.WasmPlugin)
	return o.Generation != n.Generation || !n.DeletionTimestamp.Equal(o.DeletionTimestamp) ||
		!equality.Semantic.DeepEqual(o.Status, n.Status)
}}

// reportsChanged enqueues, ReportCoalesce later, the plugins whose entries a WasmHost update added, changed
// or removed; a created or deleted WasmHost enqueues all of its plugins.
func (r *WasmPluginReconciler) reportsChanged() handler.Funcs {
	delay := r.ReportCoalesce
	if delay == 0 {
		delay = DefaultReportCoalesce
	}
	enqueue := func(q workqueue.TypedRateLimitingInterface[reconcile.Request], keys map[types.NamespacedName]bool) {
		for k := range keys {
			q.AddAfter(reconcile.Request{NamespacedName: k}, delay)
		}
	}
	return handler.Funcs{
		CreateFunc: func(_ context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(q, ChangedReports(nil, e.Object.(*wasmv1.WasmHost)))
		},
		UpdateFunc: func(_ context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(q, ChangedReports(e.ObjectOld.(*wasmv1.WasmHost), e.ObjectNew.(*wasmv1.WasmHost)))
		},
		DeleteFunc: func(_ context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			if h, ok := e.Object.(*wasmv1.WasmHost); ok {
				enqueue(q, ChangedReports(h, nil))
			}
		},
	}
}

// ChangedReports lists the plugins whose entry differs between two versions of a WasmHost (nil for none).
// The entry's since time alone is no change.
func ChangedReports(old, cur *wasmv1.WasmHost) map[types.NamespacedName]bool {
	entries := func(h *wasmv1.WasmHost) map[types.NamespacedName]wasmv1.HostPlugin {
		m := map[types.NamespacedName]wasmv1.HostPlugin{}
		if h != nil {
			for _, p := range h.Status.Plugins {
				m[types.NamespacedName{Namespace: p.Namespace, Name: p.Name}] = p
			}
		}
		return m
	}
	o, n := entries(old), entries(cur)
	out := map[types.NamespacedName]bool{}
	for k, v := range n {
		if ov, ok := o[k]; !ok || !hostcontract.SameEntry(ov, v) {
			out[k] = true
		}
	}
	for k := range o {
		if _, ok := n[k]; !ok {
			out[k] = true
		}
	}
	return out
}

// reports returns what the live hosts report of a plugin, by node. Reports of hosts whose Lease expired
// are left out: a lost host leaves the aggregate when it leaves the target set.
func (r *WasmPluginReconciler) reports(ctx context.Context, key types.NamespacedName, hosts []Host) (map[string]wasmv1.HostPlugin, error) {
	var list wasmv1.WasmHostList
	// Read only, and large at scale (a report per node of every plugin it serves): the cache's objects
	// themselves, not copies.
	if err := r.List(ctx, &list, client.MatchingFields{indexHostPlugin: hostcontract.PluginKey(key)},
		client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("list host reports: %w", err)
	}
	live := make(map[string]bool, len(hosts))
	for _, h := range hosts {
		live[h.Node] = true
	}
	out := map[string]wasmv1.HostPlugin{}
	for i := range list.Items {
		h := &list.Items[i]
		if !live[h.Spec.NodeName] {
			continue
		}
		for _, p := range h.Status.Plugins {
			if p.Namespace == key.Namespace && p.Name == key.Name {
				out[h.Spec.NodeName] = p
			}
		}
	}
	return out, nil
}

func (r *WasmPluginReconciler) referencing(index string) handler.MapFunc {
	return func(ctx context.Context, o client.Object) []reconcile.Request {
		var list wasmv1.WasmPluginList
		if err := r.List(ctx, &list, client.InNamespace(o.GetNamespace()),
			client.MatchingFields{index: o.GetName()}); err != nil {
			return nil
		}
		return Requests(list.Items)
	}
}

func (r *WasmPluginReconciler) all(ctx context.Context, _ client.Object) []reconcile.Request {
	var list wasmv1.WasmPluginList
	if err := r.List(ctx, &list); err != nil {
		return nil
	}
	return Requests(list.Items)
}

// Requests are reconcile requests for every plugin of items.
func Requests(items []wasmv1.WasmPlugin) []reconcile.Request {
	out := make([]reconcile.Request, len(items))
	for i := range items {
		out[i].NamespacedName = client.ObjectKeyFromObject(&items[i])
	}
	return out
}

func (r *WasmPluginReconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// Reconcile handles one WasmPlugin: deletion, finalizer, suspension, then the source steps (fetch, verify,
// store, validate) and the status.
func (r *WasmPluginReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	log := ctrl.LoggerFrom(ctx)
	obj := &wasmv1.WasmPlugin{}
	if err := r.Get(ctx, req.NamespacedName, obj); err != nil {
		if apierrors.IsNotFound(err) {
			r.forget(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !obj.DeletionTimestamp.IsZero() {
		r.forget(req.NamespacedName)
		return ctrl.Result{}, r.finalize(ctx, obj)
	}
	if err := r.dropFinalizer(ctx, obj); err != nil {
		return ctrl.Result{}, err
	}
	hosts, err := r.hosts.get(ctx)
	if err != nil {
		return ctrl.Result{}, err
	}
	reports, err := r.reports(ctx, req.NamespacedName, hosts)
	if err != nil {
		return ctrl.Result{}, err
	}
	if a := obj.Status.Artifact; a != nil && CorruptReported(reports) {
		r.checkStored(ctx, a.Digest)
	}

	before := obj.DeepCopy()
	o, refreshIn := r.reconcileSource(ctx, obj)
	ComputeStatus(obj, o, hosts, reports, r.now())
	r.syncSchedules(ctx, obj, o, reports)
	if wait := r.progressDue(memoOf(obj), before, obj); wait > 0 {
		// Only the progress of hosts loading changed, and it was written less than ProgressInterval
		// ago: the next write carries it, so a rollout on many nodes costs a few writes.
		return ctrl.Result{RequeueAfter: wait}, nil
	}
	if err := r.patchStatus(ctx, before, obj); err != nil {
		return ctrl.Result{}, err
	}
	r.emitEvents(before, obj, o)

	if o.Transient != nil {
		log.V(1).Info("fetch failed, retrying with backoff", "error", o.Transient.Error())
		// Returned for the controller's exponential backoff; the status already says it.
		return ctrl.Result{}, o.Transient
	}
	return ctrl.Result{RequeueAfter: refreshIn}, nil
}

// memoKey keys what the reconciler remembers of a plugin: its name, and its UID, so that a plugin deleted
// and created again under the same name starts afresh.
type memoKey struct {
	key types.NamespacedName
	uid types.UID
}

func memoOf(obj *wasmv1.WasmPlugin) memoKey {
	return memoKey{key: client.ObjectKeyFromObject(obj), uid: obj.UID}
}

// forget drops what the reconciler remembers of a plugin that is gone (a deleted object leaves no UID to
// look up, so by name).
func (r *WasmPluginReconciler) forget(key types.NamespacedName) {
	for _, m := range []*sync.Map{&r.stalls, &r.progress} {
		m.Range(func(k, _ any) bool {
			if k.(memoKey).key == key {
				m.Delete(k)
			}
			return true
		})
	}
	r.forgetSchedules(key)
}

// ProgressInterval is the least time between two status writes of a plugin whose only change is how many
// hosts serve its new generation so far.
const ProgressInterval = 5 * time.Second

// progressDue says how long to wait before writing the status when it only reports progress (see
// ProgressOnly) and the last such write is recent; 0 means write now.
func (r *WasmPluginReconciler) progressDue(uid memoKey, before, obj *wasmv1.WasmPlugin) time.Duration {
	if !ProgressOnly(&before.Status, &obj.Status) {
		r.progress.Delete(uid)
		return 0
	}
	now := r.now()
	if last, ok := r.progress.Load(uid); ok {
		if wait := ProgressInterval - now.Sub(last.(time.Time)); wait > 0 {
			return wait
		}
	}
	r.progress.Store(uid, now)
	return 0
}

// ProgressOnly reports whether two statuses differ only in the progress of hosts towards the current
// generation: both wait for nodes (reason WaitingForNodes) at the same generation and artifact, and
// only counts, the not-ready list and the messages that recount them differ.
func ProgressOnly(before, after *wasmv1.WasmPluginStatus) bool {
	waiting := func(st *wasmv1.WasmPluginStatus) bool {
		c := meta.FindStatusCondition(st.Conditions, wasmv1.ConditionReady)
		return c != nil && c.Reason == wasmv1.ReasonWaitingForNodes
	}
	if !waiting(before) || !waiting(after) {
		return false
	}
	strip := func(st *wasmv1.WasmPluginStatus) *wasmv1.WasmPluginStatus {
		c := st.DeepCopy()
		c.ReadyNodes, c.UpdatedNodes, c.TargetNodes, c.NodeSummary, c.NotReadyNodes, c.NotReadyCount = 0, 0, 0, "", nil, 0
		for i := range c.Conditions {
			if t := c.Conditions[i].Type; t == wasmv1.ConditionReady || t == wasmv1.ConditionReconciling {
				c.Conditions[i].Message = ""
			}
		}
		return c
	}
	return !equality.Semantic.DeepEqual(before, after) && equality.Semantic.DeepEqual(strip(before), strip(after))
}

// patchStatus writes the status if it changed. Host reports live in WasmHosts, so the controller is the only
// writer of a WasmPlugin's status, and a merge patch of what changed is all it takes.
func (r *WasmPluginReconciler) patchStatus(ctx context.Context, before, obj *wasmv1.WasmPlugin) error {
	if equality.Semantic.DeepEqual(before.Status, obj.Status) {
		return nil
	}
	if err := r.Status().Patch(ctx, obj, client.MergeFrom(before)); err != nil {
		return fmt.Errorf("patch status: %w", err)
	}
	return nil
}

func (r *WasmPluginReconciler) emitEvents(before, obj *wasmv1.WasmPlugin, o outcome) {
	if r.Recorder == nil {
		return
	}
	old, now := before.Status.Artifact, obj.Status.Artifact
	if now != nil && (old == nil || old.Digest != now.Digest) {
		r.Recorder.Eventf(obj, nil, corev1.EventTypeNormal, "ArtifactReady", "Validate",
			"module %s (%d bytes) stored and validated from %s", now.Digest, now.Size, now.Source)
	}
	if o.Stall != nil && !conditionTrue(before.Status.Conditions, wasmv1.ConditionStalled) {
		r.Recorder.Eventf(obj, nil, corev1.EventTypeWarning, o.Stall.Reason, "Validate", "%s", o.Stall.Error())
	}
	if o.Transient != nil && !conditionTrue(before.Status.Conditions, wasmv1.ConditionFetchFailed) {
		r.Recorder.Eventf(obj, nil, corev1.EventTypeWarning, wasmv1.ReasonFetchFailed, "Fetch", "%s", o.Transient.Error())
	}
	// A Node schedule that starts failing on some node: one Event, not one per run (hosts report
	// failures, and the controller hears of each once).
	for _, s := range obj.Status.Schedules {
		if s.FailingNodes == 0 || s.LastResult == nil || failingNodes(before.Status.Schedules, s.Name) > 0 {
			continue
		}
		r.Recorder.Eventf(obj, nil, corev1.EventTypeWarning, "ScheduleFailed", "Schedule",
			"Node schedule %s fails on %d node(s); on %s: return code %d: %s", s.Name, s.FailingNodes, s.LastResult.Node, s.LastResult.ReturnCode, s.LastResult.Message)
	}
}

func failingNodes(list []wasmv1.ScheduleStatus, name string) int32 {
	for _, s := range list {
		if s.Name == name {
			return s.FailingNodes
		}
	}
	return 0
}

// finalize forgets a deleted plugin. Nothing else is left to clean: the store's GC finds its artifact
// unreferenced and removes it after its grace period, and each host unloads it when it sees it go. A
// finalizer set by an earlier version is removed, so the deletion completes.
func (r *WasmPluginReconciler) finalize(ctx context.Context, obj *wasmv1.WasmPlugin) error {
	if err := r.dropFinalizer(ctx, obj); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	ctrl.LoggerFrom(ctx).V(1).Info("released", "plugin", klog.KObj(obj))
	return nil
}

// dropFinalizer removes wasmv1.WasmPluginFinalizer, which earlier versions set and which has no job left.
func (r *WasmPluginReconciler) dropFinalizer(ctx context.Context, obj *wasmv1.WasmPlugin) error {
	if !controllerutil.ContainsFinalizer(obj, wasmv1.WasmPluginFinalizer) {
		return nil
	}
	patch := client.MergeFrom(obj.DeepCopy())
	controllerutil.RemoveFinalizer(obj, wasmv1.WasmPluginFinalizer)
	if err := r.Patch(ctx, obj, patch); err != nil {
		return fmt.Errorf("remove the finalizer of an earlier version: %w", err)
	}
	return nil
}

func conditionTrue(conds []metav1.Condition, typ string) bool {
	for _, c := range conds {
		if c.Type == typ {
			return c.Status == metav1.ConditionTrue
		}
	}
	return false
}
