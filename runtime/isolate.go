package runtime

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// compileInChild compiles wasm in a child process (EngineConfig.CompileCommand), under
// CompileLimits.CompileMemory and the compile timeout, so that a module whose compilation would take
// more memory or time than allowed is stopped for real: the child is killed, not abandoned while it runs
// on. The child's word is only that: the caller then compiles the module itself, in process, and writes
// the compiled cache; nothing the child made is used. The child confines itself (sandbox) before it
// decodes the module, so a compiler bug a module finds there can write no file (no cache entry, which
// every host would run as native code), read none, reach no TCP port and signal no process.
func (e *Engine) compileInChild(ctx context.Context, wasm []byte) error {
	args := append(e.compileCommand[1:len(e.compileCommand):len(e.compileCommand)],
		"-memory", strconv.FormatInt(e.limits.CompileMemory, 10),
		"-max-function-bytes", strconv.FormatInt(e.limits.MaxFunctionBytes, 10),
		"-max-functions", strconv.FormatInt(e.limits.MaxFunctions, 10),
		"-max-locals", strconv.FormatInt(e.limits.MaxLocals, 10))
	cmd := exec.CommandContext(ctx, e.compileCommand[0], args...)
	cmd.Stdin = bytes.NewReader(wasm)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	// Nothing of the parent's environment (a Redis password, credentials): the child needs none of it.
	cmd.Env = []string{compileChildEnv + "=1"}
	cmd.WaitDelay = time.Second
	// Its own process group, killed whole once it ends: nothing it started outlives it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err := cmd.Run()
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	if err == nil {
		return nil
	}
	msg := strings.TrimSpace(stderr.String())
	if len(msg) > 2048 {
		msg = msg[:2048] + "..."
	}
	var exit *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return nil // the caller reports its context
	case errors.As(err, &exit) && exit.ExitCode() == exitInvalid:
		return fmt.Errorf("%w: %s", ErrInvalidModule, strings.TrimPrefix(msg, ErrInvalidModule.Error()+": "))
	case errors.As(err, &exit) && exit.ExitCode() == exitTooComplex:
		return fmt.Errorf("%w: %s", ErrModuleTooComplex, strings.TrimPrefix(msg, ErrModuleTooComplex.Error()+": "))
	case errors.As(err, &exit) && (outOfMemory(msg) || exitSignal(exit) == syscall.SIGKILL):
		return fmt.Errorf("%w: compiling it takes more than the %s the host allows a compile (--compile-memory)",
			ErrModuleTooComplex, formatBytes(uint64(e.limits.CompileMemory)))
	case errors.As(err, &exit):
		// The compiler itself failed (a panic): the same bytes fail the same way every time.
		return fmt.Errorf("%w: the compiler failed on it: %s", ErrInvalidModule, firstLine(msg))
	}
	return fmt.Errorf("start the compile process: %w", err)
}

// outOfMemory reports the Go runtime's ways of saying it could not get memory: "fatal error: runtime:
// out of memory" when the heap cannot grow, "cannot allocate memory" (ENOMEM) when a mapping fails,
// "errno=12" when a thread's stack cannot be mapped.
func outOfMemory(stderr string) bool {
	for _, s := range []string{"out of memory", "cannot allocate memory", "errno=12"} {
		if strings.Contains(stderr, s) {
			return true
		}
	}
	return false
}

func exitSignal(exit *exec.ExitError) syscall.Signal {
	if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return ws.Signal()
	}
	return 0
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// Exit codes of CompileMain besides 0 (compiled), 2 (usage) and the Go runtime's own.
const (
	exitInvalid    = 3
	exitTooComplex = 4
)

// compileChildEnv marks the environment of a compiling child process.
const compileChildEnv = "WASM_OPERATOR_COMPILE_CHILD"

// IsCompileChild reports whether this process was started by an engine to compile a module.
func IsCompileChild() bool { return os.Getenv(compileChildEnv) == "1" }

// CompileMain is the compiling child process: it limits its own memory, reads a module from
// stdin, confines itself, compiles the module in memory and exits. It returns the exit
// code. An Engine runs it through EngineConfig.CompileCommand; `manager compile` is that command.
func CompileMain(args []string, stdin io.Reader, stderr io.Writer) int {
	fs := flag.NewFlagSet("compile", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var l CompileLimits
	fs.Int64Var(&l.CompileMemory, "memory", DefaultCompileMemory, "the process's data limit in bytes")
	fs.Int64Var(&l.MaxFunctionBytes, "max-function-bytes", DefaultMaxFunctionBytes, "largest function body")
	fs.Int64Var(&l.MaxFunctions, "max-functions", DefaultMaxFunctions, "most functions")
	fs.Int64Var(&l.MaxLocals, "max-locals", DefaultMaxLocals, "most locals of one function")
	if err := fs.Parse(args); err != nil {
		fmt.Fprintln(stderr, "usage: compile [-memory BYTES] < module.wasm")
		return 2
	}
	if l.CompileMemory > 0 {
		if raceEnabled {
			go watchHeap(uint64(l.CompileMemory), stderr)
		} else if err := limitData(uint64(l.CompileMemory)); err != nil {
			fmt.Fprintf(stderr, "limit memory: %v\n", err)
			return 1
		}
		debug.SetMemoryLimit(l.CompileMemory * 3 / 4)
	}
	wasm, err := io.ReadAll(stdin)
	if err != nil {
		fmt.Fprintf(stderr, "read module: %v\n", err)
		return 1
	}
	ctx := context.Background()
	// From here on no file, no TCP port, no other process: a compiler bug a module exploits gets no
	// further than this process, whose only output is its exit code and its error text.
	if err := sandbox(); err != nil {
		fmt.Fprintf(stderr, "%v\n", err)
		return 1
	}
	// In memory: the parent compiles again, itself, what this proves can be compiled within the limits.
	e, err := newEngine(ctx, EngineConfig{Compile: l, CompileTimeout: 24 * time.Hour}, true) // the parent kills it at its timeout
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	defer e.Close(ctx)
	if _, err := e.Compile(ctx, wasm); err != nil {
		fmt.Fprintln(stderr, strings.TrimPrefix(err.Error(), "compile module: "))
		if errors.Is(err, ErrModuleTooComplex) {
			return exitTooComplex
		}
		return exitInvalid
	}
	return 0
}

// limitData sets the process's RLIMIT_DATA, which bounds the Go heap and every other private
// writable mapping (the compiler's buffers included).
func limitData(n uint64) error {
	lim := syscall.Rlimit{Cur: n, Max: n}
	return syscall.Setrlimit(syscall.RLIMIT_DATA, &lim)
}

// watchHeap ends the process as the Go runtime does when it runs out of memory once the memory it
// has mapped passes limit. Only race builds use it, where RLIMIT_DATA would count the race detector's
// shadow memory.
func watchHeap(limit uint64, stderr io.Writer) {
	sample := []metrics.Sample{{Name: "/memory/classes/total:bytes"}}
	for range time.Tick(5 * time.Millisecond) {
		metrics.Read(sample)
		if sample[0].Value.Uint64() > limit {
			fmt.Fprintln(stderr, "fatal error: runtime: out of memory (compile memory limit)")
			os.Exit(2)
		}
	}
}
