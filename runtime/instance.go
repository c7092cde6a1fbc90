package runtime

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/sys"
)

// Errors of Instance.Call that callers tell apart with errors.Is. A call stopped by its timeout or
// by its context fails with an error for which errors.Is(err, context.DeadlineExceeded) or
// errors.Is(err, context.Canceled) holds; its text is Extism's ("module closed with context
// deadline exceeded").
var (
	// ErrUnknownFunction: the module exports no function of that name.
	ErrUnknownFunction = errors.New("unknown function")
	// ErrInputTooLarge: the input is over Limits.MaxInputBytes; the guest did not run.
	ErrInputTooLarge = errors.New("input too large")
	// ErrOutputTooLarge: the guest set an output over Limits.MaxOutputBytes.
	ErrOutputTooLarge = errors.New("output too large")
	// ErrUnusable: the instance trapped, timed out, exited or was closed before; discard it.
	ErrUnusable = errors.New("instance unusable")
)

// Instance is one instantiated module with its own linear memory, kernel arena and vars. Guest
// memory and vars persist across calls, as in Extism. An Instance is not safe for concurrent use:
// one call at a time, which is what a pool gives.
//
// After a call fails because the guest trapped, ran out of time, exited or went over a limit,
// Err reports why and the instance must be closed rather than reused.
type Instance struct {
	plugin *Plugin
	mod    api.Module
	fns    []exportedFunc
	k      kernel
	budget memBudget
	stack  [1]uint64
	cctx   callCtx

	needInit bool // __wasm_call_ctors still to run
	err      error

	killCh     chan struct{} // closed when the running call must stop
	killReason atomic.Uint32 // an exit code of sys, 0 while not killed
	timer      *time.Timer
	deadline   time.Time
	stopCtx    func() bool // stops the caller context's AfterFunc; nil while none is armed

	callNum uint64 // this call's id when the caller gave none; 0 until first needed

	vars     map[string]*varEntry
	varBytes int64

	httpStatus  int
	httpHeaders map[string]string
}

type exportedFunc struct {
	name    string
	f       api.Function
	results int
}

// callCtx is the context a call passes to wazero. It is allocated once per instance, so a call
// costs no context allocation, and host functions find their instance with a type assertion. Its
// Done channel is closed by a timeout or by the caller's context; values come from the caller's
// context.
type callCtx struct {
	parent context.Context // the caller's; read only by the goroutine running the call
	inst   *Instance
}

type instanceKey struct{}

// Deadline is the call's: its timeout or the caller's deadline, whichever comes first, so that a host
// function waiting on a service (Redis, HTTP) gives up with the call instead of after it.
func (c *callCtx) Deadline() (time.Time, bool) {
	d, ok := c.parent.Deadline()
	if t := c.inst.deadline; !t.IsZero() && (!ok || t.Before(d)) {
		return t, true
	}
	return d, ok
}
func (c *callCtx) Done() <-chan struct{} { return c.inst.killCh }
func (c *callCtx) Err() error {
	switch c.inst.killReason.Load() {
	case sys.ExitCodeDeadlineExceeded:
		return context.DeadlineExceeded
	case sys.ExitCodeContextCanceled:
		return context.Canceled
	}
	return nil
}

// StopsCalls tells wazero that the instance stops its calls itself (kill), so that it starts no
// goroutine per call to watch Done (experimental.CallStopper).
func (c *callCtx) StopsCalls() {}

func (c *callCtx) Value(key any) any {
	if key == (instanceKey{}) {
		return c.inst
	}
	return c.parent.Value(key)
}

type callIDKey struct{}

// WithCallID returns a context whose calls are logged with the given call id, such as a request
// id. Without it each call gets a number unique within the engine.
func WithCallID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, callIDKey{}, id)
}

// Call runs the exported function with input and returns the output the guest set, its return
// code and error. As in Extism: a guest that sets an error returns it as err together with its
// return code (and its output); a guest that traps or is stopped returns rc 1 (or its exit code,
// for proc_exit and timeouts) and an error, and the instance becomes unusable. Call does not
// retain input after it returns; the output is the caller's.
func (i *Instance) Call(ctx context.Context, function string, input []byte) ([]byte, uint32, error) {
	if i.err != nil {
		return nil, 1, fmt.Errorf("call %s: %w: %v", function, ErrUnusable, i.err)
	}
	if lim := i.plugin.limits.MaxInputBytes; lim > 0 && int64(len(input)) > lim {
		return nil, 1, fmt.Errorf("call %s: %w: %d bytes, over the limit of %d (limits.maxInputBytes)",
			function, ErrInputTooLarge, len(input), lim)
	}
	fn, err := i.function(function)
	if err != nil {
		return nil, 1, err
	}
	if i.needInit && function != "_start" && function != "_initialize" {
		if err := i.runInit(ctx, "__wasm_call_ctors", i.plugin.limits.CallTimeout); err != nil {
			return nil, 1, fmt.Errorf("failed to initialize runtime: %w", err)
		}
		i.needInit = false
	}

	i.k.reset()
	if !i.k.setExtInput(input) {
		beside := ""
		if used := i.budget.max - i.budget.left(); used > 0 {
			beside = fmt.Sprintf(" beside the %d bytes in use", used)
		}
		return nil, 1, fmt.Errorf("call %s: %w: the %d-byte input does not fit in limits.maxMemory %s%s",
			function, ErrMemoryLimit, len(input), formatBytes(i.budget.max), beside)
	}
	i.callNum = 0
	i.stack[0] = 0
	rc, err := i.invoke(ctx, i.plugin.limits.CallTimeout, fn.f, i.stack[:], fn.results)
	i.k.dropExtInput()
	if err != nil {
		i.k.reset()
		return []byte{}, rc, err
	}
	var out []byte
	if o := i.k.output(); len(o) > 0 {
		out = make([]byte, len(o))
		copy(out, o)
	} else {
		out = []byte{}
	}
	if msg := i.k.errorText(); msg != "" {
		err = errors.New(msg)
	}
	i.k.release()
	return out, rc, err
}

func (i *Instance) function(name string) (*exportedFunc, error) {
	for j := range i.fns {
		if i.fns[j].name == name {
			return &i.fns[j], nil
		}
	}
	f := i.mod.ExportedFunction(name)
	if f == nil {
		return nil, fmt.Errorf("%w: %s", ErrUnknownFunction, name)
	}
	def := f.Definition()
	if n := len(def.ParamTypes()); n > 0 {
		return nil, fmt.Errorf("function %s takes %d params; Extism calls functions with none", name, n)
	}
	if n := len(def.ResultTypes()); n > 1 {
		return nil, fmt.Errorf("function %s has %v results, expected 0 or 1", name, n)
	}
	i.fns = append(i.fns, exportedFunc{name: name, f: f, results: len(def.ResultTypes())})
	return &i.fns[len(i.fns)-1], nil
}

// invoke runs f under the call timeout and the caller's context and maps the outcome as Extism
// does: an exit code for proc_exit and for stopped calls, the function's i32 result otherwise.
func (i *Instance) invoke(ctx context.Context, d time.Duration, f api.Function, stack []uint64, results int) (rc uint32, err error) {
	if err := ctx.Err(); err != nil {
		// Nothing ran: the instance stays usable.
		return exitCodeOf(err), sys.NewExitError(exitCodeOf(err))
	}
	i.guard(ctx, d)
	err = f.CallWithStack(&i.cctx, stack)
	i.disarm()

	if code := i.killReason.Load(); code != 0 {
		// Stopped: a host function blocked at the time (a sleep, an HTTP request) may have returned
		// its own error; what happened is the stop. If the call finished first, it keeps its
		// result, but the instance is done: its kill channel is closed.
		i.err = sys.NewExitError(code)
		if err != nil {
			err = stopError{sys.NewExitError(code)}
		}
	}
	if err != nil {
		rc = 1
		var exit *sys.ExitError
		if errors.As(err, &exit) {
			rc = exit.ExitCode()
			if rc == 0 {
				err = nil // proc_exit(0) is a success, as in Extism
			}
		}
	} else if results == 1 {
		rc = uint32(stack[0])
	}
	if err != nil && i.err == nil {
		i.err = err
	}
	if i.err == nil && i.mod.IsClosed() {
		i.err = errors.New("the module exited")
	}
	return rc, err
}

// stopError is an ExitError of a stopped call that errors.Is also matches with the context error.
type stopError struct{ *sys.ExitError }

func (e stopError) Unwrap() error { return e.ExitError }

// guard arms the stop of whatever guest code runs with &i.cctx as its context (a call, an
// initialiser, the start section): after d, or when ctx is done. disarm undoes it.
func (i *Instance) guard(ctx context.Context, d time.Duration) {
	i.cctx.parent = ctx
	if d > 0 {
		i.deadline = time.Now().Add(d)
		if i.timer == nil {
			i.timer = time.AfterFunc(d, i.timeout)
		} else {
			i.timer.Reset(d)
		}
	}
	if ctx.Done() != nil {
		i.stopCtx = context.AfterFunc(ctx, func() { i.kill(exitCodeOf(ctx.Err())) })
	}
}

func (i *Instance) disarm() {
	if i.stopCtx != nil {
		i.stopCtx()
		i.stopCtx = nil
	}
	if i.timer != nil {
		i.timer.Stop()
	}
	i.cctx.parent = context.Background()
	i.deadline = time.Time{}
}

func exitCodeOf(err error) uint32 {
	if errors.Is(err, context.DeadlineExceeded) {
		return sys.ExitCodeDeadlineExceeded
	}
	return sys.ExitCodeContextCanceled
}

func (i *Instance) timeout() { i.kill(sys.ExitCodeDeadlineExceeded) }

// kill stops the running call: blocking host functions return on the call's Done channel, and
// compiled code sees the module closed at its next loop header or function entry (an inline check
// of a flag, see RATIONALE.md, "Why is wazero patched for call timeouts?").
func (i *Instance) kill(code uint32) {
	if i.killReason.CompareAndSwap(0, code) {
		close(i.killCh)
		experimental.StopModule(i.mod, code)
	}
}

// nanosleep is WASI's sleep, cut short when the call is stopped.
func (i *Instance) nanosleep(ns int64) {
	if ns <= 0 {
		return
	}
	t := time.NewTimer(time.Duration(ns))
	defer t.Stop()
	select {
	case <-t.C:
	case <-i.killCh:
	}
}

// Err returns nil while the instance can serve further calls, and otherwise why it cannot: it
// trapped, was stopped, exited, went over a limit or was closed. Such an instance must be closed,
// never reused or pooled.
func (i *Instance) Err() error {
	return i.err
}

// Close releases the instance. It must not be called while a call is running.
func (i *Instance) Close(ctx context.Context) error {
	if i.timer != nil {
		i.timer.Stop()
	}
	if i.err == nil {
		i.err = ErrClosed
	}
	return i.mod.Close(ctx)
}

// callID returns the id this call is logged with.
func (i *Instance) callID() string {
	if f := i.plugin.callID; f != nil {
		if id := f(i.cctx.parent); id != "" {
			return id
		}
	}
	if id, ok := i.cctx.parent.Value(callIDKey{}).(string); ok {
		return id
	}
	if i.callNum == 0 {
		i.callNum = i.plugin.e.callIDs.Add(1)
	}
	return strconv.FormatUint(i.callNum, 10)
}

func (i *Instance) log(level LogLevel, msg string) {
	if level < i.plugin.logLevel {
		return
	}
	l := i.plugin.logger.WithValues("plugin", i.plugin.name, "call", i.callID())
	switch level {
	case LogTrace:
		l.V(2).Info(msg, "level", "trace")
	case LogDebug:
		l.V(1).Info(msg, "level", "debug")
	case LogInfo:
		l.Info(msg, "level", "info")
	case LogWarn:
		l.Info(msg, "level", "warn")
	default:
		l.Error(nil, msg, "level", "error")
	}
}

var _ experimental.CallStopper = (*callCtx)(nil)
