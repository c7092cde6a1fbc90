package controllers

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
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
	"github.com/wasm-operator/wasm-operator/internal/schedule"
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
// 30, one reconcile at a time): bringing a plugin to Ready takes two writes (finalizer, status), so 500
// plugins applied at once by a GitOps sync need 1000 writes, which at 20 QPS take 50 s. Reconciles wait
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
				p.Since = nil
				m[types.NamespacedName{Namespace: p.Namespace, Name: p.Name}] = p
			}
		}
		return m
	}
	o, n := entries(old), entries(cur)
	out := map[types.NamespacedName]bool{}
	for k, v := range n {
		if ov, ok := o[k]; !ok || ov != v {
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
	r.syncSchedules(ctx, obj, o)
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

// reconcileSource runs the source steps unless the plugin is suspended. It returns the outcome and when the
// source is next due for a refresh (0: never).
func (r *WasmPluginReconciler) reconcileSource(ctx context.Context, obj *wasmv1.WasmPlugin) (outcome, time.Duration) {
	if obj.Spec.Suspend {
		return outcome{Valid: validForGeneration(obj), Suspended: true}, 0
	}
	// A stall waits for the user: the source is not tried again until the spec or a referenced object
	// changes, or its refresh interval (10m when it has none) passes.
	refs := r.referenceVersions(ctx, obj)
	retry := obj.Spec.GetRefreshInterval()
	if retry == 0 {
		retry = wasmv1.DefaultRefreshInterval
	}
	if m, ok := r.stalls.Load(memoOf(obj)); ok {
		m := m.(stallMemo)
		if left := retry - r.now().Sub(m.at); m.generation == obj.Generation && m.refs == refs && left > 0 {
			return outcome{Stall: m.stall}, left
		}
	}
	art, refreshIn, err := r.resolve(ctx, obj)
	if err == nil {
		err = r.validate(ctx, obj, art)
	}
	var se *stallError
	switch {
	case err == nil:
		r.stalls.Delete(memoOf(obj))
		return outcome{Valid: true}, refreshIn
	case errors.As(err, &se):
		r.stalls.Store(memoOf(obj), stallMemo{generation: obj.Generation, refs: refs, at: r.now(), stall: se})
		return outcome{Stall: se}, retry
	default:
		// A refresh that fails for a while leaves a generation that was handled as it was: the last good
		// module keeps serving and Ready keeps saying so; FetchFailed tells of the failure.
		return outcome{Valid: validForGeneration(obj), Transient: err}, 0
	}
}

// stallMemo remembers why a plugin stalled, for which generation and referenced objects' versions.
type stallMemo struct {
	generation int64
	refs       string
	at         time.Time
	stall      *stallError
}

// referenceVersions names the versions of the ConfigMap and Secret the plugin's source refers to, as the
// metadata cache holds them ("-" for absent ones), so a change of either is noticed.
func (r *WasmPluginReconciler) referenceVersions(ctx context.Context, obj *wasmv1.WasmPlugin) string {
	src := obj.Spec.Source
	version := func(kind, name string) string {
		rv, err := r.metadataVersion(ctx, kind, obj.Namespace, name)
		if err != nil {
			return "-"
		}
		return kind + ":" + rv
	}
	switch {
	case src.ConfigMap != nil:
		return version("ConfigMap", src.ConfigMap.Name)
	case src.HTTP != nil && src.HTTP.SecretRef != nil:
		return version("Secret", src.HTTP.SecretRef.Name)
	case src.OCI != nil && src.OCI.PullSecretRef != nil:
		return version("Secret", src.OCI.PullSecretRef.Name)
	}
	return ""
}

// validForGeneration reports whether status.artifact was validated for the current generation in an
// earlier reconcile: the Ready condition of this generation has one of the reasons ComputeStatus gives a
// valid artifact.
func validForGeneration(obj *wasmv1.WasmPlugin) bool {
	st := &obj.Status
	ready := meta.FindStatusCondition(st.Conditions, wasmv1.ConditionReady)
	if st.Artifact == nil || st.ObservedGeneration != obj.Generation || ready == nil || ready.ObservedGeneration != obj.Generation {
		return false
	}
	switch ready.Reason {
	case wasmv1.ReasonSucceeded, wasmv1.ReasonWaitingForNodes, wasmv1.ReasonNodesFailed, wasmv1.ReasonNoHosts:
		return true
	}
	return false
}

// resolved is a module found by the source steps: stored, with its identity.
type resolved struct {
	Digest string
	Size   int64
	Source string
}

// resolve finds the module the spec points at and makes sure it is stored. It fetches only when needed: a
// pinned module already stored, or a source fetched by any plugin less than refreshInterval ago, is reused,
// so plugins sharing a module cause one fetch.
func (r *WasmPluginReconciler) resolve(ctx context.Context, obj *wasmv1.WasmPlugin) (resolved, time.Duration, error) {
	spec := &obj.Spec
	if spec.Source.ConfigMap != nil {
		return r.resolveConfigMap(ctx, obj)
	}
	interval := spec.GetRefreshInterval()
	key, err := r.sourceKey(ctx, obj)
	if err != nil {
		return resolved{}, 0, err
	}
	if spec.SHA256 != "" {
		// Content is fixed by the pin: once this source, with these credentials, gave it, it is never
		// fetched again. A module stored for another plugin is not reused on the pin alone, so a digest
		// is no key to a module behind credentials the plugin does not have.
		pin := "sha256:" + spec.SHA256
		if res, ok := r.fetches.cached(key); ok && res.Digest == pin {
			if has, _ := r.Store.Has(pin); has {
				return res, 0, nil
			}
		}
	}
	now := r.now()
	res, err := r.fetches.do(key, now, interval, func() (resolved, error) {
		return r.fetch(ctx, obj)
	})
	if err != nil {
		return resolved{}, 0, err
	}
	if ok, _ := r.Store.Has(res.Digest); !ok {
		// Removed from the cache since (GC, a host found it corrupt): fetch again now.
		r.fetches.forget(key)
		if res, err = r.fetches.do(key, now, interval, func() (resolved, error) { return r.fetch(ctx, obj) }); err != nil {
			return resolved{}, 0, err
		}
	}
	if err := fetch.CheckDigest(spec.SHA256, res.Digest); err != nil {
		return resolved{}, 0, classifyFetch(err)
	}
	if spec.SHA256 != "" {
		return res, 0, nil
	}
	return res, r.fetches.dueIn(key, now, interval), nil
}

// checkStored reads a stored module back, which removes a corrupt copy, so that the steps below find it
// missing and store it again. Hosts ask for it through their status (MessageCorruptModule): they only read
// the shared cache.
func (r *WasmPluginReconciler) checkStored(ctx context.Context, digest string) {
	if _, err := r.Store.Get(digest); errors.Is(err, store.ErrCorrupt) {
		ctrl.LoggerFrom(ctx).Info("a host found the stored module corrupt; storing it again", "digest", digest, "reason", err.Error())
	}
}

// fetchOptions carries the credentials read from a referenced Secret.
type fetchOptions struct {
	http fetch.HTTPOptions
	oci  fetch.OCIOptions
}

// sourceKey identifies a fetch: the source, and the Secret of its credentials at its current version (read
// from the metadata cache), so plugins with the same source share one fetch and a changed Secret causes a
// new one.
func (r *WasmPluginReconciler) sourceKey(ctx context.Context, obj *wasmv1.WasmPlugin) (string, error) {
	src := obj.Spec.Source
	var key, secret string
	switch {
	case src.HTTP != nil:
		key = "http " + src.HTTP.URL
		if src.HTTP.SecretRef != nil {
			secret = src.HTTP.SecretRef.Name
		}
	case src.OCI != nil:
		key = fmt.Sprintf("oci %s insecure=%t", src.OCI.Image, src.OCI.Insecure)
		if src.OCI.PullSecretRef != nil {
			secret = src.OCI.PullSecretRef.Name
		}
	default:
		return "", stall(wasmv1.ReasonSourceNotFound, "spec.source sets no source: set one of http, oci or configMap")
	}
	if secret == "" {
		return key, nil
	}
	rv, err := r.metadataVersion(ctx, "Secret", obj.Namespace, secret)
	if err != nil {
		return "", err
	}
	return key + " secret " + obj.Namespace + "/" + secret + "@" + rv, nil
}

// metadataVersion is the resourceVersion of a ConfigMap or Secret from the metadata-only cache: the
// controller watches them to notice changes without holding their contents in memory.
func (r *WasmPluginReconciler) metadataVersion(ctx context.Context, kind, ns, name string) (string, error) {
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind(kind))
	err := r.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, m)
	if apierrors.IsNotFound(err) {
		return "", stall(wasmv1.ReasonSourceNotFound, "%s %s/%s does not exist: create it or fix the reference",
			strings.ToLower(kind), ns, name)
	}
	if err != nil {
		return "", fmt.Errorf("read %s %s/%s: %w", strings.ToLower(kind), ns, name, err)
	}
	return m.ResourceVersion, nil
}

// readFetchOptions reads the credentials of the plugin's source from its Secret, from the API server: only
// when a fetch happens.
func (r *WasmPluginReconciler) readFetchOptions(ctx context.Context, obj *wasmv1.WasmPlugin) (fetchOptions, error) {
	src := obj.Spec.Source
	opts := fetchOptions{
		http: fetch.HTTPOptions{MaxBytes: r.MaxModuleBytes},
		oci:  fetch.OCIOptions{MaxBytes: r.MaxModuleBytes},
	}
	switch {
	case src.HTTP != nil && src.HTTP.SecretRef != nil:
		sec, err := r.secret(ctx, obj.Namespace, src.HTTP.SecretRef.Name)
		if err != nil {
			return opts, err
		}
		opts.http.BearerToken = strings.TrimSpace(string(sec.Data["token"]))
		opts.http.CAPEM = sec.Data["ca.crt"]
		if opts.http.Headers, err = parseHeaders(sec.Data["headers"]); err != nil {
			return opts, stall(wasmv1.ReasonInvalidSource, "secret %s/%s key headers: %w", obj.Namespace, sec.Name, err)
		}
	case src.OCI != nil:
		opts.oci.Insecure = src.OCI.Insecure
		if src.OCI.PullSecretRef == nil {
			break
		}
		sec, err := r.secret(ctx, obj.Namespace, src.OCI.PullSecretRef.Name)
		if err != nil {
			return opts, err
		}
		opts.oci.DockerConfigJSON = sec.Data[corev1.DockerConfigJsonKey]
		if len(opts.oci.DockerConfigJSON) == 0 {
			return opts, stall(wasmv1.ReasonUnauthorized,
				"pull secret %s/%s has no %s key: create it with kubectl create secret docker-registry",
				obj.Namespace, sec.Name, corev1.DockerConfigJsonKey)
		}
	}
	return opts, nil
}

func (r *WasmPluginReconciler) secret(ctx context.Context, ns, name string) (*corev1.Secret, error) {
	var sec corev1.Secret
	err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &sec)
	if apierrors.IsNotFound(err) {
		return nil, stall(wasmv1.ReasonSourceNotFound, "secret %s/%s does not exist: create it or fix the reference", ns, name)
	}
	if err != nil {
		return nil, fmt.Errorf("read secret %s/%s: %w", ns, name, err)
	}
	return &sec, nil
}

// parseHeaders reads "Name: value" lines.
func parseHeaders(b []byte) (map[string]string, error) {
	if len(b) == 0 {
		return nil, nil
	}
	h := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(name) == "" {
			return nil, fmt.Errorf("line %q is not \"Name: value\"", line)
		}
		h[strings.TrimSpace(name)] = strings.TrimSpace(value)
	}
	return h, nil
}

// fetch downloads the module and stores it.
func (r *WasmPluginReconciler) fetch(ctx context.Context, obj *wasmv1.WasmPlugin) (resolved, error) {
	opts, err := r.readFetchOptions(ctx, obj)
	if err != nil {
		return resolved{}, err
	}
	var art *fetch.Artifact
	if h := obj.Spec.Source.HTTP; h != nil {
		art, err = r.Fetcher.HTTP(ctx, h.URL, opts.http)
	} else {
		art, err = r.Fetcher.OCI(ctx, obj.Spec.Source.OCI.Image, opts.oci)
	}
	if err != nil {
		return resolved{}, classifyFetch(err)
	}
	return r.put(art)
}

func (r *WasmPluginReconciler) put(art *fetch.Artifact) (resolved, error) {
	e, err := r.Store.Put(art.Data)
	if err != nil {
		return resolved{}, fmt.Errorf("store module: %w", err)
	}
	return resolved{Digest: e.Digest, Size: e.Size, Source: art.Source}, nil
}

// resolveConfigMap reads the module from the ConfigMap when its version changed since it was last read (the
// fetch cache is keyed by it), so an unchanged ConfigMap is not read again.
func (r *WasmPluginReconciler) resolveConfigMap(ctx context.Context, obj *wasmv1.WasmPlugin) (resolved, time.Duration, error) {
	ref := obj.Spec.Source.ConfigMap
	rv, err := r.metadataVersion(ctx, "ConfigMap", obj.Namespace, ref.Name)
	if err != nil {
		return resolved{}, 0, err
	}
	key := fmt.Sprintf("configmap %s/%s@%s#%s", obj.Namespace, ref.Name, rv, ref.Key)
	res, err := r.fetches.do(key, r.now(), 0, func() (resolved, error) {
		var cm corev1.ConfigMap
		if err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: obj.Namespace, Name: ref.Name}, &cm); err != nil {
			if apierrors.IsNotFound(err) {
				return resolved{}, stall(wasmv1.ReasonSourceNotFound,
					"configmap %s/%s does not exist: create it with the module under binaryData key %q", obj.Namespace, ref.Name, ref.Key)
			}
			return resolved{}, fmt.Errorf("read configmap %s/%s: %w", obj.Namespace, ref.Name, err)
		}
		art, err := r.Fetcher.ConfigMap(obj.Namespace+"/"+ref.Name, cm.BinaryData, cm.Data, ref.Key)
		if err != nil {
			return resolved{}, classifyFetch(err)
		}
		return r.put(art)
	})
	if err != nil {
		return resolved{}, 0, err
	}
	if has, _ := r.Store.Has(res.Digest); !has {
		r.fetches.forget(key) // removed from the cache since: read it again on the next reconcile
		return resolved{}, 0, fmt.Errorf("module %s of configmap %s/%s left the cache; storing it again", hostcontract.ShortDigest(res.Digest), obj.Namespace, ref.Name)
	}
	if err := fetch.CheckDigest(obj.Spec.SHA256, res.Digest); err != nil {
		return resolved{}, 0, classifyFetch(err)
	}
	return res, 0, nil
}

// validate compiles the module (once per digest), checks it against the plugin's permissions and limits,
// and on success makes it the plugin's artifact.
func (r *WasmPluginReconciler) validate(ctx context.Context, obj *wasmv1.WasmPlugin, res resolved) error {
	mod, err := r.modules.get(ctx, res.Digest, r.Engine, r.Store)
	if err != nil {
		// A corrupt file in the cache is not the user's to fix: the store removed it, and the next
		// reconcile fetches the module again.
		if errors.Is(err, runtime.ErrInvalidModule) {
			return stall(wasmv1.ReasonInvalidModule, "module %s: %w", hostcontract.ShortDigest(res.Digest), err)
		}
		if errors.Is(err, runtime.ErrModuleTooComplex) {
			return stall(wasmv1.ReasonModuleTooComplex, "module %s: %w; use a smaller module or raise the limit on the controller and the hosts",
				hostcontract.ShortDigest(res.Digest), err)
		}
		return err
	}
	cfg := PluginConfig(obj, ctrl.LoggerFrom(ctx))
	if err := mod.Check(cfg.Permissions, cfg.Limits); err != nil {
		se := classifyModule(err)
		if se.Reason == wasmv1.ReasonPermissionDenied {
			se.Err = fmt.Errorf("module %s: %w; grant it in spec.permissions or use a module that does not import it", hostcontract.ShortDigest(res.Digest), err)
		} else {
			se.Err = fmt.Errorf("module %s: %w", hostcontract.ShortDigest(res.Digest), err)
		}
		return se
	}
	if err := schedule.CheckSpec(obj.Spec.Schedules, mod.Info().Exports); err != nil {
		return stall(wasmv1.ReasonInvalidSchedule, "%w; fix spec.schedules", err)
	}
	st := &obj.Status
	if st.Artifact == nil || st.Artifact.Digest != res.Digest {
		now := metav1.NewTime(r.now())
		path, _ := store.RelPath(res.Digest)
		st.Artifact = &wasmv1.Artifact{Digest: res.Digest, ShortDigest: hostcontract.ShortDigest(res.Digest), Size: res.Size,
			Path: path, Source: res.Source, LastUpdateTime: &now}
	} else if res.Source != "" {
		st.Artifact.Source = res.Source
	}
	info := mod.Info()
	st.Module = &wasmv1.ModuleInfo{Exports: info.Exports, Imports: info.Imports, WASI: info.WASI, ABI: info.ABI}
	return nil
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

// fetchCache remembers what each source resolved to, so plugins sharing a source cause one fetch per
// refresh interval, and concurrent reconciles of them wait for the one fetch in flight.
type fetchCache struct {
	mu      sync.Mutex
	entries map[string]*fetchEntry
}

type fetchEntry struct {
	done    chan struct{}
	res     resolved
	err     error
	fetched time.Time
}

func (c *fetchCache) do(key string, now time.Time, interval time.Duration, fetch func() (resolved, error)) (resolved, error) {
	c.mu.Lock()
	if c.entries == nil {
		c.entries = map[string]*fetchEntry{}
	}
	e, ok := c.entries[key]
	if ok {
		c.mu.Unlock()
		<-e.done
		if e.err == nil && (interval == 0 || now.Sub(e.fetched) < interval) {
			return e.res, nil
		}
		c.mu.Lock()
		if c.entries[key] == e {
			delete(c.entries, key)
		}
		if e2, ok := c.entries[key]; ok {
			// Another reconcile started a fresh fetch meanwhile: share it.
			c.mu.Unlock()
			<-e2.done
			return e2.res, e2.err
		}
	}
	e = &fetchEntry{done: make(chan struct{}), fetched: now}
	c.entries[key] = e
	c.mu.Unlock()
	e.res, e.err = fetch()
	close(e.done)
	return e.res, e.err
}

func (c *fetchCache) forget(key string) {
	c.mu.Lock()
	delete(c.entries, key)
	c.mu.Unlock()
}

// dueIn says how long until key needs fetching again (0: never).
func (c *fetchCache) dueIn(key string, now time.Time, interval time.Duration) time.Duration {
	if interval == 0 {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[key]; ok {
		if left := e.fetched.Add(interval).Sub(now); left > 0 {
			return left
		}
	}
	return time.Second
}

// prune forgets completed fetches made before cutoff, such as those keyed by a Secret version that was
// replaced since; a source still in use is fetched again on its next reconcile.
func (c *fetchCache) prune(cutoff time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, e := range c.entries {
		select {
		case <-e.done:
			if e.fetched.Before(cutoff) {
				delete(c.entries, k)
			}
		default:
		}
	}
}

// cached returns what key last resolved to, when a fetch of it completed without error.
func (c *fetchCache) cached(key string) (resolved, bool) {
	c.mu.Lock()
	e, ok := c.entries[key]
	c.mu.Unlock()
	if !ok {
		return resolved{}, false
	}
	select {
	case <-e.done:
		return e.res, e.err == nil
	default:
		return resolved{}, false
	}
}

// moduleCache keeps one compiled module per digest, so validating many plugins of one module compiles it
// once. Different digests compile at once (the engine bounds how many); plugins of a digest being compiled
// wait for that one compilation.
type moduleCache struct {
	mu      sync.Mutex
	modules map[string]*moduleEntry
}

type moduleEntry struct {
	done chan struct{}
	mod  *runtime.Module
	err  error
}

func (c *moduleCache) get(ctx context.Context, digest string, eng *runtime.Engine, st *store.Store) (*runtime.Module, error) {
	c.mu.Lock()
	if c.modules == nil {
		c.modules = map[string]*moduleEntry{}
	}
	e, ok := c.modules[digest]
	if !ok {
		e = &moduleEntry{done: make(chan struct{})}
		c.modules[digest] = e
	}
	c.mu.Unlock()
	if ok {
		select {
		case <-e.done:
			return e.mod, e.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	e.mod, e.err = compileStored(ctx, digest, eng, st)
	close(e.done)
	if e.err != nil {
		// Not kept: the next reconcile tries again (the module may be stored again, or the cause pass).
		c.mu.Lock()
		delete(c.modules, digest)
		c.mu.Unlock()
	}
	return e.mod, e.err
}

func compileStored(ctx context.Context, digest string, eng *runtime.Engine, st *store.Store) (*runtime.Module, error) {
	data, err := st.Get(digest)
	if err != nil {
		return nil, fmt.Errorf("read module %s: %w", digest, err)
	}
	m, err := eng.Compile(ctx, data)
	if err != nil {
		return nil, fmt.Errorf("compile: %w", err)
	}
	return m, nil
}

// release closes the modules whose digest keep does not hold.
func (c *moduleCache) release(ctx context.Context, keep map[string]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for d, e := range c.modules {
		select {
		case <-e.done:
		default:
			continue // still compiling
		}
		if !keep[d] && e.mod != nil {
			_ = e.mod.Close(ctx)
			delete(c.modules, d)
		}
	}
}
