package runtime

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tetratelabs/wazero"
)

// compileInChild compiles wasm in a child process (EngineConfig.CompileCommand) into the engine's
// compiled cache, under CompileLimits.CompileMemory and the compile timeout, so that a module
// whose compilation would take more memory or time than allowed is stopped for real: the child is
// killed, not abandoned while it runs on. The caller then compiles in process, from the cache.
//
// The child writes into a staging folder of its own, the only one it may write (sandbox), and the
// entry it wrote moves into the cache only if it is the one entry of this module (its name is a hash
// of the module and the machine): a compile that misbehaves, through a compiler bug a module found, can
// neither replace the code of another module, which every host of the cluster would run, nor write
// anything else.
func (e *Engine) compileInChild(ctx context.Context, wasm []byte) error {
	staging, err := os.MkdirTemp(e.writeDir, stagingPrefix)
	if err != nil {
		return fmt.Errorf("create a staging folder for the compile: %w", err)
	}
	defer os.RemoveAll(staging)
	if err := e.runCompileChild(ctx, wasm, staging); err != nil || ctx.Err() != nil {
		return err
	}
	entry := wazero.CompiledEntryPath(wasm, e.termination)
	if err := checkStaged(staging, entry); err != nil {
		return fmt.Errorf("%w: the compile process %v; nothing of it is kept", ErrInvalidModule, err)
	}
	if err := os.MkdirAll(filepath.Join(e.writeDir, filepath.Dir(entry)), 0o755); err != nil {
		return err
	}
	// Within one folder (file system): the entry appears whole or not at all.
	return os.Rename(filepath.Join(staging, entry), filepath.Join(e.writeDir, entry))
}

// stagingPrefix starts the names of compile staging folders in a compiled cache, which readers of the
// cache skip.
const stagingPrefix = ".compile-"

// checkStaged checks that the staging folder holds the regular file entry and nothing else.
func checkStaged(staging, entry string) error {
	var found []string
	err := filepath.WalkDir(staging, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(staging, p)
		switch {
		case d.IsDir():
			if rel != "." && rel != filepath.Dir(entry) {
				found = append(found, rel+"/")
			}
		case !d.Type().IsRegular():
			found = append(found, rel+" (not a regular file)")
		case rel != entry:
			found = append(found, rel)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("left what cannot be read: %w", err)
	}
	if len(found) > 0 {
		if len(found) > 4 {
			found = append(found[:4], "...")
		}
		return fmt.Errorf("wrote %s, which is not the entry of this module (%s)", strings.Join(found, ", "), entry)
	}
	if fi, err := os.Lstat(filepath.Join(staging, entry)); err != nil || !fi.Mode().IsRegular() {
		return fmt.Errorf("succeeded without writing the entry of this module (%s)", entry)
	}
	return nil
}

// runCompileChild runs the compile process with dir as its compiled cache.
func (e *Engine) runCompileChild(ctx context.Context, wasm []byte, dir string) error {
	args := append(e.compileCommand[1:len(e.compileCommand):len(e.compileCommand)],
		"-cache-dir", dir,
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
	err := cmd.Run()
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
// stdin, compiles it into the cache folder given with -cache-dir and exits. It returns the exit
// code. An Engine runs it through EngineConfig.CompileCommand; `manager compile` is that command.
func CompileMain(args []string, stdin io.Reader, stderr io.Writer) int {
	fs := flag.NewFlagSet("compile", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("cache-dir", "", "the compiled cache folder to fill (required)")
	var l CompileLimits
	fs.Int64Var(&l.CompileMemory, "memory", DefaultCompileMemory, "the process's data limit in bytes")
	fs.Int64Var(&l.MaxFunctionBytes, "max-function-bytes", DefaultMaxFunctionBytes, "largest function body")
	fs.Int64Var(&l.MaxFunctions, "max-functions", DefaultMaxFunctions, "most functions")
	fs.Int64Var(&l.MaxLocals, "max-locals", DefaultMaxLocals, "most locals of one function")
	if err := fs.Parse(args); err != nil || *dir == "" {
		fmt.Fprintln(stderr, "usage: compile -cache-dir DIR [-memory BYTES] < module.wasm")
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
	// Nothing but -cache-dir, the parent's staging folder, may be written from here on, and no network
	// reached: a compiler bug a module exploits gets no further than this process.
	if err := sandbox(*dir); err != nil {
		fmt.Fprintf(stderr, "%v\n", err)
		return 1
	}
	e, err := newEngine(ctx, EngineConfig{compiledDir: *dir, Compile: l, CompileTimeout: 24 * time.Hour}, true) // the parent kills it at its timeout
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
