package host

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/types"

	wasmv1 "github.com/wasm-operator/wasm-operator/api/v1alpha1"
	"github.com/wasm-operator/wasm-operator/controllers"
	"github.com/wasm-operator/wasm-operator/internal/crashguard"
	"github.com/wasm-operator/wasm-operator/internal/hostapi"
	"github.com/wasm-operator/wasm-operator/internal/hostcontract"
	"github.com/wasm-operator/wasm-operator/internal/kv"
	"github.com/wasm-operator/wasm-operator/internal/store"
	"github.com/wasm-operator/wasm-operator/pool"
	"github.com/wasm-operator/wasm-operator/runtime"
)

// DrainTimeout bounds how long a replaced or unloaded version waits for its in-flight calls before its
// instances are closed.
const DrainTimeout = time.Minute

// version is one loaded version of a plugin: a compiled module with the plugin's permissions and a pool of
// its instances. A plugin's version changes when its digest or its config, permissions, limits or pool
// settings change.
type version struct {
	key      string
	digest   string
	plugin   *runtime.Plugin
	pool     *pool.Pool[*runtime.Instance]
	acquire  time.Duration
	maxInput int64
}

// plugin is the host's state of one WasmPlugin.
type plugin struct {
	cur atomic.Pointer[version]

	mu         sync.Mutex
	phase      wasmv1.NodePhase
	message    string
	generation int64
	since      time.Time
}

// DefaultMaxInitTimeout is `manager host --max-init-timeout`.
const DefaultMaxInitTimeout = 30 * time.Second

// InitTimeout is the deadline of making one instance: the plugin's call timeout (the runtime's default
// when it has none), capped at max when max is set.
func InitTimeout(callTimeout, max time.Duration) time.Duration {
	d := callTimeout
	if d <= 0 {
		d = runtime.DefaultInitTimeout
	}
	if max > 0 && d > max {
		d = max
	}
	return d
}

// Plugins is the table of plugins a host serves. It implements hostapi.Invoker.
type Plugins struct {
	Engine  *runtime.Engine
	Store   *store.Store
	Metrics *hostapi.Metrics
	Log     logr.Logger
	// Guard, when set, refuses a version whose load crashed the host before.
	Guard *crashguard.Guard
	// KVRedis holds the entries of plugins granted permissions.kv with scope Cluster; nil: such plugins
	// fail to load. Scope Node needs nothing: its stores live in the host.
	KVRedis *kv.Redis
	// MaxInitTimeout caps how long making one instance may take (the module's start section, its
	// initialisers), whatever the plugin's limits.callTimeout (up to 10m) says: a reconcile worker of the
	// host waits for the first instance of a load, and four plugins with a start section that never
	// returns would otherwise hold every worker for their whole call timeout. Zero: no cap.
	MaxInitTimeout time.Duration

	kvNode  kv.Node
	mu      sync.RWMutex
	plugins map[types.NamespacedName]*plugin
}

var (
	_ hostapi.Invoker = (*Plugins)(nil)
	_ Loader          = (*Plugins)(nil)
)

func (h *Plugins) get(key types.NamespacedName) *plugin {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.plugins[key]
}

func (h *Plugins) getOrAdd(key types.NamespacedName) *plugin {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.plugins == nil {
		h.plugins = map[types.NamespacedName]*plugin{}
	}
	p, ok := h.plugins[key]
	if !ok {
		p = &plugin{phase: wasmv1.NodePhaseLoading, since: time.Now()}
		h.plugins[key] = p
	}
	return p
}

// versionKey identifies what a version is made of: the digest and every spec field the runtime or the pool
// reads. Two specs with the same key run the same way.
func versionKey(obj *wasmv1.WasmPlugin, digest string) string {
	b, _ := json.Marshal(struct {
		Digest      string
		Config      map[string]string
		Permissions *wasmv1.Permissions
		Limits      *wasmv1.Limits
		Pool        *wasmv1.PoolSpec
	}{digest, obj.Spec.Config, obj.Spec.Permissions, obj.Spec.Limits, obj.Spec.Pool})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Ensure makes the host serve the plugin's current artifact with its current spec. It loads a new version
// only when the digest or the spec changed, and swaps it in only once it loaded and its first instance
// started; the old version drains in the background. When loading fails, the old version keeps serving and
// the failure is returned for the caller to retry with backoff.
func (h *Plugins) Ensure(ctx context.Context, obj *wasmv1.WasmPlugin) error {
	key := types.NamespacedName{Namespace: obj.Namespace, Name: obj.Name}
	digest := obj.Status.Artifact.Digest
	want := versionKey(obj, digest)
	p := h.getOrAdd(key)
	p.setGeneration(obj.Generation)
	if cur := p.cur.Load(); cur != nil && cur.key == want {
		p.setPhase(wasmv1.NodePhaseReady, "")
		return nil
	}
	if !p.phaseIs(wasmv1.NodePhaseFailed) { // a failure stays visible while the caller retries
		p.setPhase(wasmv1.NodePhaseLoading, "loading "+hostcontract.ShortDigest(digest))
	}

	if h.Guard != nil {
		err := h.Guard.Begin(key.String(), want)
		if errors.Is(err, crashguard.ErrSuspectLoading) {
			return fmt.Errorf("load %s: %w", hostcontract.ShortDigest(digest), err) // tried again with backoff
		}
		if err != nil {
			// Retrying would crash the host again: the version stays Failed until it changes.
			msg := fmt.Sprintf("load %s: %v", hostcontract.ShortDigest(digest), err)
			if cur := p.cur.Load(); cur != nil {
				msg += "; serving " + hostcontract.ShortDigest(cur.digest)
			}
			p.setPhase(wasmv1.NodePhaseFailed, msg)
			return nil
		}
		defer h.Guard.Done(key.String())
	}
	start := time.Now()
	v, err := h.load(ctx, obj, digest, want)
	if err != nil {
		if h.Metrics != nil {
			h.Metrics.LoadFailures.WithLabelValues(obj.Namespace, obj.Name).Inc()
		}
		msg := fmt.Sprintf("load %s: %v", hostcontract.ShortDigest(digest), err)
		var ie *runtime.ImportError
		if errors.As(err, &ie) || errors.Is(err, runtime.ErrMemoryLimit) {
			// The spec now forbids what the old version is allowed (a permission revoked, a limit
			// lowered): serving it would keep a grant the user took back.
			if old := p.cur.Swap(nil); old != nil {
				go h.retire(old)
				msg += "; stopped serving " + hostcontract.ShortDigest(old.digest) + ", which the new spec does not allow"
			}
		} else if cur := p.cur.Load(); cur != nil {
			msg += "; serving " + hostcontract.ShortDigest(cur.digest)
		}
		p.setPhase(wasmv1.NodePhaseFailed, msg)
		return err
	}
	if h.Metrics != nil {
		h.Metrics.LoadDuration.WithLabelValues(obj.Namespace, obj.Name).Observe(time.Since(start).Seconds())
	}
	old := p.cur.Swap(v)
	p.setPhase(wasmv1.NodePhaseReady, "")
	if old != nil {
		go h.retire(old)
	}
	h.Log.Info("serving", "plugin", key, "digest", digest, "loadSeconds", time.Since(start).Seconds())
	return nil
}

// setPhase records the load state, and since when it holds.
func (p *plugin) setPhase(phase wasmv1.NodePhase, msg string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.phase != phase {
		p.since = time.Now()
	}
	p.phase, p.message = phase, msg
}

// setGeneration records the generation of the spec being applied.
func (p *plugin) setGeneration(g int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.generation != g {
		p.since = time.Now()
	}
	p.generation = g
}

func (p *plugin) phaseIs(phase wasmv1.NodePhase) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.phase == phase
}

func (h *Plugins) load(ctx context.Context, obj *wasmv1.WasmPlugin, digest, key string) (*version, error) {
	size := int64(-1) // unknown: objects written before the size was recorded
	if a := obj.Status.Artifact; a != nil && a.Size > 0 {
		size = a.Size
	}
	data, err := h.Store.GetSize(digest, size)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, fmt.Errorf("module missing from the shared cache; the controller stores it again: %w", err)
	case errors.Is(err, store.ErrCorrupt):
		// The cache is read-only here: the controller sees this message and stores the module again.
		return nil, fmt.Errorf("%s; the controller stores it again: %w", hostcontract.MessageCorruptModule, err)
	case err != nil:
		return nil, fmt.Errorf("read module: %w", err)
	}
	start := time.Now()
	mod, err := h.Engine.Compile(ctx, data)
	if err != nil {
		return nil, fmt.Errorf("compile: %w", err)
	}
	if h.Metrics != nil {
		h.Metrics.CompileDuration.WithLabelValues(obj.Namespace, obj.Name).Observe(time.Since(start).Seconds())
	}
	defer mod.Close(ctx)
	cfg := controllers.PluginConfig(obj, h.Log.WithName("plugin"))
	// The plugin's log lines of a call carry the request id its caller sees in X-Request-Id, looked up
	// only when a line is logged (nothing added to each call).
	cfg.CallID = hostapi.RequestID
	if d := InitTimeout(cfg.Limits.CallTimeout, h.MaxInitTimeout); d != InitTimeout(cfg.Limits.CallTimeout, 0) {
		cfg.Limits.InitTimeout = d // capped; otherwise the runtime derives it, and names callTimeout in errors
	}
	if err := h.attachKV(types.NamespacedName{Namespace: obj.Namespace, Name: obj.Name}, obj, &cfg); err != nil {
		return nil, err
	}
	rp, err := h.Engine.NewPlugin(ctx, mod, cfg)
	if err != nil {
		return nil, err
	}
	ps := obj.Spec.Pool
	pl, err := pool.New(context.Background(), pool.Options[*runtime.Instance]{
		New:            rp.NewInstance,
		Close:          func(in *runtime.Instance) { _ = in.Close(context.Background()) },
		MaxIdle:        noneIfZero(ps.GetMaxIdle()),
		MaxConcurrency: int(ps.GetMaxConcurrency()),
		AcquireTimeout: noWaitIfZero(ps.GetAcquireTimeout()),
		IdleTTL:        ps.GetIdleTTL(),
		Prewarm:        int(ps.GetPrewarm()),
		MaxUses:        int(ps.GetMaxUses()),
	})
	if err != nil {
		_ = rp.Close(ctx)
		return nil, fmt.Errorf("start instances: %w", err)
	}
	// The first instance proves the module starts (its runtime initialises) before it takes traffic.
	in, err := pl.Get(ctx)
	if err != nil {
		pl.Close()
		_ = rp.Close(ctx)
		return nil, fmt.Errorf("start the first instance: %w", err)
	}
	pl.Put(in)
	return &version{key: key, digest: digest, plugin: rp, pool: pl,
		acquire: ps.GetAcquireTimeout(), maxInput: obj.Spec.Limits.GetMaxInputBytes()}, nil
}

// The pool reads zero as its default; the API's zero means none.
func noneIfZero(n int32) int {
	if n == 0 {
		return -1
	}
	return int(n)
}

func noWaitIfZero(d time.Duration) time.Duration {
	if d == 0 {
		return time.Nanosecond
	}
	return d
}

// retire drains a replaced version: in-flight calls finish, then its instances and plugin are closed.
func (h *Plugins) retire(v *version) {
	ctx, cancel := context.WithTimeout(context.Background(), DrainTimeout)
	defer cancel()
	_ = v.pool.Drain(ctx)
	v.pool.Close()
	_ = v.plugin.Close(context.Background())
}

// Unload stops serving a plugin; in-flight calls finish first. It reports whether it served it.
func (h *Plugins) Unload(key types.NamespacedName) bool {
	h.mu.Lock()
	p, ok := h.plugins[key]
	delete(h.plugins, key)
	h.mu.Unlock()
	if !ok {
		return false
	}
	if v := p.cur.Swap(nil); v != nil {
		go h.retire(v)
	}
	if h.Guard != nil {
		h.Guard.Forget(key.String())
	}
	h.kvNode.Remove(key.String())
	if h.Metrics != nil {
		h.Metrics.Forget(key.Namespace, key.Name)
	}
	h.Log.Info("unloaded", "plugin", key)
	return true
}

// Keys lists the plugins the host has state for.
func (h *Plugins) Keys() []types.NamespacedName {
	h.mu.RLock()
	defer h.mu.RUnlock()
	out := make([]types.NamespacedName, 0, len(h.plugins))
	for k := range h.plugins {
		out = append(out, k)
	}
	return out
}

// State implements Loader: the plugin's phase, the digest it serves and the generation it applies.
func (h *Plugins) State(key types.NamespacedName) (State, bool) {
	p := h.get(key)
	if p == nil {
		return State{}, false
	}
	p.mu.Lock()
	st := State{Generation: p.generation, Phase: p.phase, Message: p.message, Since: p.since}
	p.mu.Unlock()
	if v := p.cur.Load(); v != nil {
		st.Digest = v.digest
	}
	return st, true
}

// UpdateGauges sets the pool metrics of every plugin.
func (h *Plugins) UpdateGauges() {
	if h.Metrics == nil {
		return
	}
	for _, k := range h.Keys() {
		p := h.get(k)
		if p == nil {
			continue
		}
		if v := p.cur.Load(); v != nil {
			st := v.pool.Stats()
			h.Metrics.SetPool(k.Namespace, k.Name, st.Idle, st.Busy, st.Waiting)
		}
	}
}

// MaxInputBytes implements hostapi.Invoker.
func (h *Plugins) MaxInputBytes(namespace, name string) (int64, bool) {
	p := h.get(types.NamespacedName{Namespace: namespace, Name: name})
	if p == nil {
		return 0, false
	}
	v := p.cur.Load()
	if v == nil {
		return 0, false
	}
	return v.maxInput, true
}

// Invoke implements hostapi.Invoker: it takes an instance from the plugin's pool, calls it, and returns it
// to the pool, or discards it when the call left it unusable (trapped, timed out, over a limit).
func (h *Plugins) Invoke(ctx context.Context, namespace, name, function string, input []byte) ([]byte, error) {
	p := h.get(types.NamespacedName{Namespace: namespace, Name: name})
	if p == nil {
		return nil, hostapi.ErrNotServed
	}
	for {
		v := p.cur.Load()
		if v == nil {
			return nil, hostapi.ErrNotServed
		}
		in, err := v.pool.Get(ctx)
		switch {
		case errors.Is(err, pool.ErrClosed):
			// The version was replaced while this call waited: take the new one.
			if p.cur.Load() == v {
				return nil, hostapi.ErrNotServed
			}
			continue
		case errors.Is(err, pool.ErrSaturated):
			return nil, &hostapi.SaturatedError{RetryAfter: v.acquire}
		case err != nil:
			return nil, err
		}
		out, rc, err := in.Value().Call(ctx, function, input)
		if in.Value().Err() != nil {
			v.pool.Discard(in)
		} else {
			v.pool.Put(in)
		}
		if err == nil && rc == 0 {
			return out, nil
		}
		return nil, callError(ctx, err, rc)
	}
}

// callError maps a failed call to the error that picks its HTTP status.
func callError(ctx context.Context, err error, rc uint32) error {
	switch {
	case errors.Is(err, runtime.ErrUnknownFunction):
		return fmt.Errorf("%w: %v", hostapi.ErrNoFunction, err)
	case errors.Is(err, runtime.ErrInputTooLarge):
		return fmt.Errorf("%w: %v", hostapi.ErrInputTooLarge, err)
	case ctx.Err() != nil:
		return ctx.Err() // the caller went away
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%w: %v", hostapi.ErrTimeout, err)
	}
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	return &hostapi.PluginError{Message: msg, Code: rc}
}
