package controllers

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"

	wasmv1 "github.com/wasm-operator/wasm-operator/api/v1alpha1"
	"github.com/wasm-operator/wasm-operator/internal/hostcontract"
	"github.com/wasm-operator/wasm-operator/internal/schedule"
	fetch "github.com/wasm-operator/wasm-operator/internal/source"
	"github.com/wasm-operator/wasm-operator/internal/store"
	"github.com/wasm-operator/wasm-operator/runtime"
)

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
