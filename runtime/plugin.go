package runtime

import (
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"maps"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/sys"
)

// PluginConfig is what a plugin is allowed and given besides its module.
type PluginConfig struct {
	// Name identifies the plugin in logs and errors, such as "namespace/name".
	Name string
	// Permissions are the host services granted.
	Permissions Permissions
	// Config is what the plugin reads with config_get. It is copied.
	Config map[string]string
	// Limits bound each instance.
	Limits Limits
	// Logger receives plugin log messages, with the plugin's name and a call id. The zero value
	// discards them.
	Logger logr.Logger
	// CallID, when set, names the call a log line belongs to from the call's context (the host's
	// request id), read only when a line is logged; "" falls back to WithCallID or a number.
	CallID func(context.Context) string
}

// Plugin is a compiled module with its permissions, config and limits, from which instances are
// made. A Plugin is safe for concurrent use; its instances are not, and are meant to be pooled.
type Plugin struct {
	e        *Engine
	mod      *Module
	name     string
	perms    Permissions
	config   map[string]string
	limits   Limits
	logger   logr.Logger
	callID   func(context.Context) string
	logLevel LogLevel
	http     *httpGuard
	init     initKind
	modCfg   wazero.ModuleConfig
	closed   atomic.Bool
}

// initKind is how a guest runtime is initialised, detected as Extism does.
type initKind int

const (
	initNone    initKind = iota
	initHaskell          // _initialize if exported, then hs_init(0, 0), when the instance is made
	initReactor          // WASI reactor: _initialize, when the instance is made
	initCtors            // __wasm_call_ctors, before the first call of anything but _start/_initialize
)

// NewPlugin makes a plugin of a compiled module. It fails when the module imports a host service
// that is not granted, with an *ImportError naming the permission to grant, or when it cannot run
// within the limits; see Module.Check. The plugin holds its own handle on the module.
func (e *Engine) NewPlugin(ctx context.Context, m *Module, cfg PluginConfig) (*Plugin, error) {
	if err := m.Check(cfg.Permissions, cfg.Limits); err != nil {
		return nil, fmt.Errorf("load plugin %s: %w", cfg.Name, err)
	}
	if err := checkKV(cfg.Permissions.KV); err != nil {
		return nil, fmt.Errorf("load plugin %s: %w", cfg.Name, err)
	}
	e.mu.Lock()
	closed := e.closed
	e.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("load plugin %s: engine %w", cfg.Name, ErrClosed)
	}
	e.retain(m.c)
	p := &Plugin{
		e:        e,
		mod:      &Module{e: e, c: m.c},
		name:     cfg.Name,
		perms:    cfg.Permissions,
		config:   maps.Clone(cfg.Config),
		limits:   cfg.Limits,
		logger:   cfg.Logger,
		callID:   cfg.CallID,
		logLevel: LogOff,
		init:     detectInit(m.c.cm),
		modCfg: wazero.NewModuleConfig().
			WithName(""). // anonymous: any number of instances may coexist
			WithStartFunctions().
			WithSysWalltime().
			WithSysNanotime().
			WithRandSource(crand.Reader),
	}
	if p.config == nil {
		p.config = map[string]string{}
	}
	if cfg.Permissions.Log != nil {
		p.logLevel = cfg.Permissions.Log.Level
	}
	if cfg.Permissions.HTTP != nil {
		p.http = newHTTPGuard(*cfg.Permissions.HTTP)
	}
	return p, nil
}

// Load compiles wasm and makes a plugin of it, in one step.
func (e *Engine) Load(ctx context.Context, wasm []byte, cfg PluginConfig) (*Plugin, error) {
	m, err := e.Compile(ctx, wasm)
	if err != nil {
		return nil, fmt.Errorf("load plugin %s: %w", cfg.Name, err)
	}
	defer m.Close(ctx)
	return e.NewPlugin(ctx, m, cfg)
}

func detectInit(cm wazero.CompiledModule) initKind {
	exports := cm.ExportedFunctions()
	noParams := func(name string) bool {
		def, ok := exports[name]
		return ok && len(def.ParamTypes()) == 0
	}
	switch {
	case exports["hs_init"] != nil:
		return initHaskell
	case noParams("_initialize"):
		return initReactor
	case noParams("__wasm_call_ctors"):
		return initCtors
	}
	return initNone
}

// Name returns the name given in PluginConfig.
func (p *Plugin) Name() string { return p.name }

// Module returns the plugin's module. It stays valid while the plugin is open.
func (p *Plugin) Module() *Module { return p.mod }

// Close releases the plugin's handle on its module. Instances already made keep working until
// they are closed.
func (p *Plugin) Close(ctx context.Context) error {
	if p.closed.CompareAndSwap(false, true) {
		return p.mod.Close(ctx)
	}
	return nil
}

// NewInstance instantiates the module with its own memory, kernel arena and vars, and initialises
// its guest runtime (the start section, WASI reactor _initialize, Haskell hs_init) within the init
// timeout (Limits.InitTimeout), stopping it as a call is stopped when it runs longer; that fails
// with ErrInitTimeout.
func (p *Plugin) NewInstance(ctx context.Context) (*Instance, error) {
	if p.closed.Load() {
		return nil, fmt.Errorf("instantiate plugin %s: %w", p.name, ErrClosed)
	}
	i := &Instance{plugin: p, killCh: make(chan struct{}), needInit: p.init == initCtors}
	i.cctx = callCtx{parent: context.Background(), inst: i}
	i.budget.max = uint64(max(p.limits.MaxMemoryBytes, 0))
	i.budget.other = p.mod.c.info.TableBytes // checked to fit by NewPlugin
	i.k.budget = &i.budget
	alloc := experimental.MemoryAllocatorFunc(func(_, max uint64) experimental.LinearMemory {
		return &linearMemory{budget: &i.budget, max: max}
	})
	// Instantiation runs the module's start section, the guest's code: it runs under the same stop
	// as a call, within the init timeout, and so do the initialisers after it, in what is left.
	d := p.limits.initTimeout()
	start := time.Now()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("instantiate plugin %s: %w", p.name, err)
	}
	i.guard(ctx, d)
	mod, err := p.e.rt.InstantiateModule(experimental.WithMemoryAllocator(&i.cctx, alloc), p.mod.c.cm,
		p.modCfg.WithNanosleep(i.nanosleep))
	i.disarm()
	if code := i.killReason.Load(); code != 0 {
		if mod != nil {
			mod.Close(context.Background())
		}
		if err := ctx.Err(); err != nil || code != sys.ExitCodeDeadlineExceeded {
			return nil, fmt.Errorf("instantiate plugin %s: %w", p.name, cmpErr(err, context.Canceled))
		}
		return nil, fmt.Errorf("instantiate plugin %s: %w: the start function did not finish within %v (%s)",
			p.name, ErrInitTimeout, d, p.limits.initTimeoutName())
	}
	if err != nil {
		return nil, fmt.Errorf("instantiate plugin %s: %w", p.name, err)
	}
	i.mod = mod
	left := max(d-time.Since(start), time.Nanosecond)
	switch p.init {
	case initHaskell:
		err = i.initHaskell(ctx, left)
	case initReactor:
		err = i.runInit(ctx, "_initialize", left)
	}
	if err != nil {
		i.Close(ctx)
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			return nil, fmt.Errorf("instantiate plugin %s: failed to initialize runtime: %w: not done within %v (%s): %w",
				p.name, ErrInitTimeout, d, p.limits.initTimeoutName(), err)
		}
		return nil, fmt.Errorf("instantiate plugin %s: failed to initialize runtime: %w", p.name, err)
	}
	return i, nil
}

func (i *Instance) runInit(ctx context.Context, name string, d time.Duration) error {
	f := i.mod.ExportedFunction(name)
	if f == nil {
		return nil
	}
	_, err := i.invoke(ctx, d, f, make([]uint64, max(len(f.Definition().ParamTypes()), len(f.Definition().ResultTypes()), 1)), 0)
	return err
}

func (i *Instance) initHaskell(ctx context.Context, d time.Duration) error {
	start := time.Now()
	if err := i.runInit(ctx, "_initialize", d); err != nil {
		i.log(LogError, "Error running reactor _initialize: "+err.Error())
		if i.err != nil {
			return err
		}
	}
	if err := i.runInit(ctx, "hs_init", max(d-time.Since(start), time.Nanosecond)); err != nil {
		return err
	}
	i.log(LogDebug, "Initialized Haskell language runtime.")
	return nil
}

// linearMemory backs a guest's linear memory and refuses to grow it beyond the instance's memory
// budget, which makes memory.grow return -1 inside the guest.
type linearMemory struct {
	budget  *memBudget
	max     uint64 // the module's own maximum
	buf     []byte
	started bool
}

func (m *linearMemory) Reallocate(size uint64) []byte {
	b := m.budget
	// The first call is the module's declared minimum, checked when the plugin was made; a nil
	// buffer there would end instantiation with a panic. Every later one is a memory.grow.
	if m.started && !b.fits(size, b.arena) {
		return nil
	}
	m.started = true
	if size <= uint64(cap(m.buf)) {
		m.buf = m.buf[:size]
	} else {
		// Grow geometrically, by a quarter, so that page-by-page growth copies little, within what
		// the module allows and what the budget has left beside the kernel and the other uses: the
		// whole capacity is charged, since Go holds it.
		newCap := max(size, uint64(cap(m.buf))+uint64(cap(m.buf))/4)
		newCap = min(newCap, max(m.max, size))
		if b.max > 0 && b.max > b.arena+b.other {
			newCap = min(newCap, max(b.max-b.arena-b.other, size))
		}
		buf := make([]byte, size, newCap)
		copy(buf, m.buf)
		m.buf = buf
	}
	b.guest = uint64(cap(m.buf))
	return m.buf
}

// Free leaves the buffer to the garbage collector: a guest may still be unwinding when its module
// is closed.
func (m *linearMemory) Free() {}

var _ api.Closer = (*Plugin)(nil)

func cmpErr(err, def error) error {
	if err == nil {
		return def
	}
	return err
}
