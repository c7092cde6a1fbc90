package runtime

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// Errors that callers tell apart with errors.Is.
var (
	// ErrClosed is returned by an Engine, Plugin or Instance used after Close.
	ErrClosed = errors.New("closed")
	// ErrInvalidModule wraps the reason a module cannot be compiled: not WebAssembly, malformed,
	// or using features wazero does not support. Retrying does not help.
	ErrInvalidModule = errors.New("invalid WebAssembly module")
	// ErrCompileTimeout is returned when compiling a module, waiting for a compile slot included,
	// takes longer than EngineConfig.CompileTimeout.
	ErrCompileTimeout = errors.New("compile timed out")
	// ErrModuleTooComplex is returned for a module over one of EngineConfig.Compile's limits, checked
	// before compiling (function size, count, locals) or met while compiling (memory). The message
	// names the limit and the flag that raises it.
	ErrModuleTooComplex = errors.New("module too complex")
)

// Defaults of EngineConfig.
const (
	DefaultMaxConcurrentCompiles = 2
	DefaultCompileTimeout        = time.Minute
)

// EngineConfig configures an Engine. The zero value is usable.
type EngineConfig struct {
	// CacheDir is the root of the shared cache. Compiled code is kept in
	// <CacheDir>/compiled/<wazero version>/<goos-goarch>, so that processes sharing the folder
	// compile each module once. Empty keeps compiled code in memory only.
	CacheDir string
	// SharedCacheDir, when set, is the root of a shared cache this process only reads (a node
	// host's read-only mount): before compiling, its compiled entries that CacheDir lacks are copied
	// into CacheDir, so code the controller compiled is reused, while what this process compiles is
	// written to CacheDir only. It needs CacheDir.
	SharedCacheDir string
	// MaxConcurrentCompiles bounds how many modules compile at once; compiling a large module
	// keeps a core busy for seconds. Zero means DefaultMaxConcurrentCompiles.
	MaxConcurrentCompiles int
	// CompileTimeout bounds one compilation, waiting for a slot included. Zero means
	// DefaultCompileTimeout.
	CompileTimeout time.Duration

	// Compile bounds what compiling one module may take; see CompileLimits.
	Compile CompileLimits
	// CompileCommand, when set, is the command of a child process that compiles each module first
	// (the program and its first arguments, such as the manager's own path and "compile"; it must
	// run CompileMain), under Compile.CompileMemory and CompileTimeout, killed when it goes over
	// either, and confined (no file, no TCP, no signal). Its success is only a bound: the engine then
	// compiles the module itself and alone writes the compiled cache (in a temporary folder when
	// CacheDir is empty). Empty compiles in process only, where neither bound can stop a compile that
	// has started.
	CompileCommand []string

	// withoutTermination turns close-on-context-done off, so that a benchmark can show its cost.
	// Calls can then not be stopped.
	withoutTermination bool
	// compiledDir, when set, is the compiled-code folder itself (CacheDir names the cache's root): a
	// compiling child gets the folder its parent loads from.
	compiledDir string
}

// Engine compiles modules and runs their instances. It holds one wazero runtime with the Extism
// kernel (host module extism:host/env) and WASI; every plugin of a process shares it. An Engine is
// safe for concurrent use.
type Engine struct {
	rt             wazero.Runtime
	cache          wazero.CompilationCache
	compiledDir    string
	sharedDir      string // compiled entries of SharedCacheDir
	sem            chan struct{}
	compileTimeout time.Duration
	limits         CompileLimits
	compileCommand []string
	writeDir       string // where compiled code is written; a child process fills it
	tempDir        string // removed on Close

	callIDs atomic.Uint64

	mu      sync.Mutex
	modules map[[32]byte]*compiled
	closed  bool
}

// compiled is one entry of the in-memory compiled-module cache, shared by every Module handle
// for the same bytes.
type compiled struct {
	digest [32]byte
	done   chan struct{} // closed when the compilation has finished
	cm     wazero.CompiledModule
	info   ModuleInfo
	err    error
	refs   int // guarded by Engine.mu
}

// NewEngine starts an engine. Close it to release the runtime and every compiled module.
func NewEngine(ctx context.Context, cfg EngineConfig) (*Engine, error) {
	return newEngine(ctx, cfg, false)
}

// newEngine is NewEngine; a compiling child passes child to compile in process whatever its
// configuration says.
func newEngine(ctx context.Context, cfg EngineConfig, child bool) (*Engine, error) {
	e := &Engine{
		sem:            make(chan struct{}, cmp(cfg.MaxConcurrentCompiles, DefaultMaxConcurrentCompiles)),
		compileTimeout: cmp(cfg.CompileTimeout, DefaultCompileTimeout),
		limits:         cfg.Compile.withDefaults(),
		modules:        map[[32]byte]*compiled{},
	}
	// Guests are untrusted: without close-on-context-done an endless loop could never be stopped.
	// RATIONALE.md, "Why is close-on-context-done always on?", has the measured cost.
	rc := wazero.NewRuntimeConfig().WithCloseOnContextDone(!cfg.withoutTermination)
	if cfg.CacheDir != "" || cfg.compiledDir != "" {
		e.compiledDir = cfg.compiledDir
		if e.compiledDir == "" {
			e.compiledDir = CompiledDir(cfg.CacheDir)
		}
		if err := os.MkdirAll(e.compiledDir, 0o755); err != nil {
			return nil, fmt.Errorf("create compile cache: %w", err)
		}
		cache, err := wazero.NewCompilationCacheWithDir(e.compiledDir)
		if err != nil {
			return nil, fmt.Errorf("open compile cache %s: %w", e.compiledDir, err)
		}
		e.cache = cache
		rc = rc.WithCompilationCache(cache)
		e.writeDir = e.compiledDir
		if cfg.SharedCacheDir != "" {
			e.sharedDir = CompiledDir(cfg.SharedCacheDir)
		}
	}
	if len(cfg.CompileCommand) > 0 && !child {
		e.compileCommand = cfg.CompileCommand
		if e.cache == nil {
			dir, err := os.MkdirTemp("", "wasm-operator-compiled-")
			if err != nil {
				return nil, fmt.Errorf("create compile cache: %w", err)
			}
			cache, err := wazero.NewCompilationCacheWithDir(dir)
			if err != nil {
				os.RemoveAll(dir)
				return nil, fmt.Errorf("open compile cache %s: %w", dir, err)
			}
			e.cache, e.writeDir, e.tempDir = cache, dir, dir
			rc = rc.WithCompilationCache(cache)
		}
	}
	e.rt = wazero.NewRuntimeWithConfig(ctx, rc)
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, e.rt); err != nil {
		e.rt.Close(ctx)
		return nil, fmt.Errorf("instantiate WASI: %w", err)
	}
	if err := instantiateHostModules(ctx, e.rt); err != nil {
		e.rt.Close(ctx)
		return nil, err
	}
	return e, nil
}

func cmp[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// WazeroVersion is the version of wazero compiled code is cached for.
func WazeroVersion() string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if dep.Path == "github.com/tetratelabs/wazero" {
				if dep.Replace != nil && dep.Replace.Version != "" {
					return dep.Replace.Version
				}
				if dep.Version != "" && dep.Version != "(devel)" {
					return dep.Version
				}
			}
		}
	}
	return "v1.12.0" // test binaries carry no dependency versions; this is go.mod's
}

// CompiledDir returns where an engine with the given cache root keeps compiled code.
func CompiledDir(cacheDir string) string {
	return filepath.Join(cacheDir, "compiled", WazeroVersion(), goruntime.GOOS+"-"+goruntime.GOARCH)
}

// Close releases the runtime, every compiled module and every instance still open.
func (e *Engine) Close(ctx context.Context) error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	e.modules = map[[32]byte]*compiled{}
	e.mu.Unlock()
	err := e.rt.Close(ctx)
	if e.cache != nil {
		err = errors.Join(err, e.cache.Close(ctx))
	}
	if e.tempDir != "" {
		err = errors.Join(err, os.RemoveAll(e.tempDir))
	}
	return err
}

// Module is a compiled module. Handles for the same bytes share one compilation, which is
// released when the last handle is closed.
type Module struct {
	e      *Engine
	c      *compiled
	closed atomic.Bool
}

// Compile compiles wasm, or returns the compilation already made for the same bytes. With a
// cache folder, a module compiled before by any process sharing it loads in milliseconds. A
// module that is not valid WebAssembly fails with ErrInvalidModule.
func (e *Engine) Compile(ctx context.Context, wasm []byte) (*Module, error) {
	digest := sha256.Sum256(wasm)
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil, fmt.Errorf("compile module: engine %w", ErrClosed)
	}
	c, found := e.modules[digest]
	if !found {
		c = &compiled{digest: digest, done: make(chan struct{})}
		e.modules[digest] = c
	}
	c.refs++
	e.mu.Unlock()

	if !found {
		if e.sharedDir != "" {
			// Best effort: a missing entry is compiled here instead.
			_ = seedCompiled(e.sharedDir, e.compiledDir)
		}
		c.cm, c.info, c.err = e.compile(ctx, wasm)
		if c.err != nil {
			e.mu.Lock()
			if e.modules[digest] == c {
				delete(e.modules, digest) // the next Compile tries again
			}
			e.mu.Unlock()
		}
		close(c.done)
	} else {
		select {
		case <-c.done:
		case <-ctx.Done():
			e.release(c)
			return nil, fmt.Errorf("compile module: %w", ctx.Err())
		}
	}
	if c.err != nil {
		e.release(c)
		return nil, c.err
	}
	return &Module{e: e, c: c}, nil
}

func (e *Engine) compile(ctx context.Context, wasm []byte) (wazero.CompiledModule, ModuleInfo, error) {
	shape, scanErr := scan(wasm)
	if scanErr == nil {
		if err := e.limits.check(&shape); err != nil {
			return nil, ModuleInfo{}, fmt.Errorf("compile module: %w", err)
		}
		wasm = boundTables(wasm, &shape)
	} // else the compiler says what is wrong
	ctx, cancel := context.WithTimeout(ctx, e.compileTimeout)
	defer cancel()
	select {
	case e.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ModuleInfo{}, compileCtxErr(ctx, e.compileTimeout, "waiting for a compile slot")
	}
	if e.compileCommand != nil {
		err := e.compileInChild(ctx, wasm)
		if ctx.Err() != nil {
			<-e.sem
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return nil, ModuleInfo{}, fmt.Errorf("compile module: %w: %w after %v compiling (the compile process was killed); the limit is --compile-timeout",
					ErrModuleTooComplex, ErrCompileTimeout, e.compileTimeout)
			}
			return nil, ModuleInfo{}, compileCtxErr(ctx, e.compileTimeout, "compiling")
		}
		if err != nil {
			<-e.sem
			return nil, ModuleInfo{}, fmt.Errorf("compile module: %w", err)
		}
		// The child proved the compile fits the limits; what follows compiles it here, and fills the
		// cache, from nothing the child made.
	}
	type result struct {
		cm  wazero.CompiledModule
		err error
	}
	res := make(chan result, 1)
	go func() {
		// wazero does not stop a compilation midway; the slot stays taken until it ends, so that a
		// burst of timed-out compilations cannot pile up on the cores.
		defer func() { <-e.sem }()
		cm, err := e.rt.CompileModule(context.Background(), wasm)
		res <- result{cm, err}
	}()
	select {
	case r := <-res:
		if r.err != nil {
			return nil, ModuleInfo{}, fmt.Errorf("compile module: %w: %v", ErrInvalidModule, r.err)
		}
		if scanErr != nil {
			// What the budget charges is read from the sections: a module they cannot be read from
			// is not run, even when the compiler takes it.
			r.cm.Close(context.Background())
			return nil, ModuleInfo{}, fmt.Errorf("compile module: %w: cannot read its sections: %v", ErrInvalidModule, scanErr)
		}
		info := inspect(r.cm)
		info.MinMemoryBytes, info.TableBytes = shape.minMemoryBytes(), shape.tableBytes()
		return r.cm, info, nil
	case <-ctx.Done():
		go func() {
			if r := <-res; r.cm != nil {
				r.cm.Close(context.Background())
			}
		}()
		return nil, ModuleInfo{}, compileCtxErr(ctx, e.compileTimeout, "compiling")
	}
}

func compileCtxErr(ctx context.Context, timeout time.Duration, doing string) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("compile module: %w after %v %s; the limit is --compile-timeout", ErrCompileTimeout, timeout, doing)
	}
	return fmt.Errorf("compile module: %s: %w", doing, ctx.Err())
}

func (e *Engine) release(c *compiled) {
	e.mu.Lock()
	c.refs--
	last := c.refs == 0
	if last && e.modules[c.digest] == c {
		delete(e.modules, c.digest)
	}
	closed := e.closed
	e.mu.Unlock()
	if last && c.cm != nil && !closed {
		c.cm.Close(context.Background())
	}
}

func (e *Engine) retain(c *compiled) {
	e.mu.Lock()
	c.refs++
	e.mu.Unlock()
}

// Digest returns the module's digest, "sha256:" and 64 lowercase hex digits.
func (m *Module) Digest() string {
	return "sha256:" + hex.EncodeToString(m.c.digest[:])
}

// Info describes the module's exports, imports and memory.
func (m *Module) Info() ModuleInfo {
	return m.c.info
}

// Close releases the handle. The compilation is released with its last handle; plugins made
// from the module hold their own.
func (m *Module) Close(context.Context) error {
	if m.closed.CompareAndSwap(false, true) {
		m.e.release(m.c)
	}
	return nil
}

// cachedModules reports how many compilations the in-memory cache holds.
func (e *Engine) cachedModules() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.modules)
}

var _ api.Closer = (*Module)(nil)
