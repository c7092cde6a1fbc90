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
	"testing"

	"github.com/tetratelabs/wazero"

	wb "github.com/wasm-operator/wasm-operator/internal/wasmbuild"
)

// hostileChild returns a compile command that runs the real compile process, then does what script
// says in its staging folder ($dir), as a compile that a module took over could.
func hostileChild(t *testing.T, script string) []string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "compile.sh")
	body := fmt.Sprintf("#!/bin/sh\n%q \"$@\" || exit $?\ndir=\"$2\"\n%s\n", os.Args[0], script)
	if err := os.WriteFile(path, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return []string{path}
}

// TestCompileChildWritesOnlyItsEntry: what a compile process writes besides the one entry of its
// module (another module's entry, a link, its entry under another name) is refused and nothing of it
// reaches the cache, which every host runs code from; a well-behaved child's entry does.
func TestCompileChildWritesOnlyItsEntry(t *testing.T) {
	ctx := context.Background()
	good := runModule(wb.Body(wb.I32Const(0)), nil, nil)
	entry := wazero.CompiledEntryPath(good, true)
	for _, c := range []struct {
		name, script, want string
	}{
		{"another module's entry", `mkdir -p "$dir/other" && echo code > "$dir/` + filepath.Dir(entry) + `/00ff"`, "00ff"},
		{"a folder of its own", `mkdir -p "$dir/other"`, "other/"},
		{"a link for its entry", `mv "$dir/` + entry + `" "$dir/x" && ln -s /etc/passwd "$dir/` + entry + `"`, "not a regular file"},
		{"its entry under another name", `mv "$dir/` + entry + `" "$dir/` + filepath.Dir(entry) + `/11ee"`, "11ee"},
		{"nothing", `rm "$dir/` + entry + `"`, "without writing the entry of this module"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			e := newEngineWith(t, EngineConfig{CacheDir: dir, CompileCommand: hostileChild(t, c.script)})
			_, err := e.Compile(ctx, good)
			if !errors.Is(err, ErrInvalidModule) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Compile: %v, want the compile refused naming %q", err, c.want)
			}
			var kept []string
			_ = filepath.WalkDir(CompiledDir(dir), func(p string, d os.DirEntry, _ error) error {
				if d != nil && !d.IsDir() {
					kept = append(kept, p)
				}
				return nil
			})
			if len(kept) > 0 {
				t.Fatalf("the cache holds %v after a refused compile", kept)
			}
		})
	}
	t.Run("well-behaved", func(t *testing.T) {
		dir := t.TempDir()
		e := newEngineWith(t, EngineConfig{CacheDir: dir, CompileCommand: hostileChild(t, "true")})
		if _, err := e.Compile(ctx, good); err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Lstat(filepath.Join(CompiledDir(dir), entry)); err != nil || !fi.Mode().IsRegular() {
			t.Fatalf("the entry of the module in the cache: %v", err)
		}
		des, _ := os.ReadDir(CompiledDir(dir))
		for _, de := range des {
			if strings.HasPrefix(de.Name(), stagingPrefix) {
				t.Fatalf("staging folder %s left behind", de.Name())
			}
		}
	})
}

// sandboxProbeEnv makes the test binary confine itself to the folder it names and try what a compile
// taken over would (sandboxProbe), instead of running tests.
const sandboxProbeEnv = "WASM_OPERATOR_TEST_SANDBOX_PROBE"

// sandboxProbe confines the process to dir and reports, one line each on stdout, what it could do.
func sandboxProbe(dir string) int {
	if err := sandbox(dir); err != nil {
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
	try("write inside", os.WriteFile(filepath.Join(dir, "entry"), []byte("x"), 0o644))
	try("write outside", os.WriteFile(filepath.Join(filepath.Dir(dir), "outside"), []byte("x"), 0o644))
	_, err := os.ReadFile("/proc/self/status")
	try("read", err)
	c, err := net.Dial("tcp", os.Getenv(sandboxProbeEnv+"_ADDR"))
	if err == nil {
		c.Close()
	}
	try("connect", err)
	return 0
}

// TestSandbox: a confined compile process writes its staging folder only and reaches no TCP port, on a
// kernel with Landlock's file system and network rules (6.7 or later; this machine's).
func TestSandbox(t *testing.T) {
	if err := SandboxAvailable(); err != nil {
		t.Fatalf("this machine should confine compiles: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	staging := filepath.Join(t.TempDir(), "staging")
	if err := os.Mkdir(staging, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), sandboxProbeEnv+"="+staging, sandboxProbeEnv+"_ADDR="+ln.Addr().String())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("probe: %v\n%s", err, out)
	}
	for _, want := range []string{"write inside: done", "write outside: refused", "read: done", "connect: refused"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the confined process: want %q in\n%s", want, out)
		}
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(staging), "outside")); err == nil {
		t.Error("the confined process wrote outside its folder")
	}
}
