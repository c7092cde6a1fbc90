package runtime

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	wb "github.com/wasm-operator/wasm-operator/internal/wasmbuild"
)

// lyingChild is a compile command that says a module compiled (exit 0) without looking at it, as a
// compile process a module took over could.
func lyingChild(t *testing.T) []string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "compile.sh")
	if err := os.WriteFile(path, []byte("#!/bin/sh\ncat >/dev/null\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return []string{path}
}

// TestChildOnlyBounds: the compile process's success is only a bound; the engine compiles the module
// itself and writes the compiled cache itself, so a child that lies gets no invalid module through,
// and a valid one is compiled and cached all the same.
func TestChildOnlyBounds(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	e := newEngineWith(t, EngineConfig{CacheDir: dir, CompileCommand: lyingChild(t)})
	if _, err := e.Compile(ctx, []byte("\x00asm\x01\x00\x00\x00\x0a\x04\x01\x02\x00\x00")); !errors.Is(err, ErrInvalidModule) {
		t.Fatalf("an invalid module the child said compiled: %v, want ErrInvalidModule", err)
	}
	if _, err := e.Compile(ctx, runModule(wb.Body(wb.I32Const(0)), nil, nil)); err != nil {
		t.Fatal(err)
	}
	var entries int
	_ = filepath.WalkDir(CompiledDir(dir), func(_ string, d os.DirEntry, _ error) error {
		if d != nil && d.Type().IsRegular() {
			entries++
		}
		return nil
	})
	if entries != 1 {
		t.Fatalf("%d compiled entries after one module, want the engine's own", entries)
	}
}

// sandboxProbeEnv makes the test binary confine itself and try what a compile taken over would
// (sandboxProbe), instead of running tests.
const sandboxProbeEnv = "WASM_OPERATOR_TEST_SANDBOX_PROBE"

// sandboxProbe confines the process and reports, one line each on stdout, what it could still do.
func sandboxProbe(dir string) int {
	if err := sandbox(); err != nil {
		fmt.Println("sandbox:", err)
		return 1
	}
	try := func(what string, err error) {
		if err != nil {
			fmt.Printf("%s: refused: %v\n", what, err)
		} else {
			fmt.Printf("%s: done\n", what)
		}
	}
	try("write", os.WriteFile(filepath.Join(dir, "entry"), []byte("x"), 0o644))
	_, err := os.ReadFile("/proc/self/status")
	try("read", err)
	c, err := net.Dial("tcp", os.Getenv(sandboxProbeEnv+"_ADDR"))
	if err == nil {
		c.Close()
	}
	try("connect", err)
	try("signal", syscall.Kill(os.Getppid(), 0))
	_, err = fmt.Fprintln(os.Stderr, "stderr")
	try("stderr", err)
	return 0
}

// TestSandbox: a confined compile process writes and reads no file, reaches no TCP port and signals no
// other process, but keeps its stderr, on a kernel with Landlock ABI 6 or later (this machine's).
func TestSandbox(t *testing.T) {
	if err := SandboxAvailable(); err != nil {
		t.Fatalf("this machine should confine compiles: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), sandboxProbeEnv+"="+dir, sandboxProbeEnv+"_ADDR="+ln.Addr().String())
	var stdout strings.Builder
	cmd.Stdout = &stdout
	if err := cmd.Run(); err != nil {
		t.Fatalf("probe: %v\n%s", err, stdout.String())
	}
	out := stdout.String()
	for _, want := range []string{"write: refused", "read: refused", "connect: refused", "signal: refused", "stderr: done"} {
		if !strings.Contains(out, want) {
			t.Errorf("the confined process: want %q in\n%s", want, out)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "entry")); err == nil {
		t.Error("the confined process wrote a file")
	}
}
