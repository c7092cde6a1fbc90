package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/go-logr/logr"

	"github.com/wasm-operator/wasm-operator/runtime"
)

func init() {
	commands["compile"] = command{
		summary: "compile one module from stdin into a compiled cache, under a memory limit (run by the other subcommands)",
		run:     func(args []string) int { return runtime.CompileMain(args, os.Stdin, os.Stderr) },
		hidden:  true,
	}
}

// compileFlags are the bounds of compiling an untrusted module, shared by every subcommand that compiles.
type compileFlags struct {
	limits  runtime.CompileLimits
	timeout time.Duration
}

func (c *compileFlags) register(fs *flag.FlagSet) {
	c.limits.CompileMemory = runtime.DefaultCompileMemory
	c.limits.MaxFunctionBytes = runtime.DefaultMaxFunctionBytes
	fs.Var(quantityFlag{&c.limits.CompileMemory}, "compile-memory", "memory limit of one compile (a child process), such as 384Mi; a module that needs more is refused as too complex")
	fs.DurationVar(&c.timeout, "compile-timeout", runtime.DefaultCompileTimeout, "time limit of one compile; the compiling process is killed after it")
	fs.Var(quantityFlag{&c.limits.MaxFunctionBytes}, "compile-max-function-size", "largest function body compiled, such as 1Mi")
	fs.Int64Var(&c.limits.MaxFunctions, "compile-max-functions", runtime.DefaultMaxFunctions, "most functions a module may define")
	fs.Int64Var(&c.limits.MaxLocals, "compile-max-locals", runtime.DefaultMaxLocals, "most locals one function may declare")
}

// engineConfig compiles in a child process of this binary (`manager compile`), so that a compile over its
// memory or time is killed rather than taking the process down with it.
func (c *compileFlags) engineConfig(cacheDir string) (runtime.EngineConfig, error) {
	exe, err := os.Executable()
	if err != nil {
		return runtime.EngineConfig{}, fmt.Errorf("find the manager binary to compile with: %w", err)
	}
	return runtime.EngineConfig{CacheDir: cacheDir, Compile: c.limits, CompileTimeout: c.timeout,
		CompileCommand: []string{exe, "compile"}}, nil
}

// logSandbox says at start when compile processes cannot be confined on this kernel.
func logSandbox(log logr.Logger) {
	if err := runtime.SandboxAvailable(); err != nil {
		log.Info("compile sandbox: " + err.Error())
	}
}
