// Package testplugins builds the example plugins in examples/plugins with the
// Go toolchain, for tests, end-to-end runs and the development stack.
//
// Builds are cached in <repo>/bin/plugins/<name>.wasm and redone only when a
// source of the plugin or of pdk/ (or go.mod) is newer than the module. Each
// build writes a temporary file and renames it into place, so test packages
// running at the same time never see a partial module.
//
//	func TestGreet(t *testing.T) {
//		wasm := testplugins.Build(t, "greet") // path to greet.wasm
//		...
//	}
package testplugins

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// modulePath is the Go module whose checkout holds the plugins.
const modulePath = "github.com/wasm-operator/wasm-operator"

// PluginsDir is the plugins' source folder, relative to the repository root.
const PluginsDir = "examples/plugins"

// CacheDir is the build cache folder, relative to the repository root.
const CacheDir = "bin/plugins"

// buildMu serialises builds within a process: the machine's cores are
// better spent on one build at a time, and a second caller for the same
// plugin then finds it fresh.
var buildMu sync.Mutex

// Build compiles the example plugin name (a folder of examples/plugins) if
// its cached module is missing or stale and returns the module's path. It
// fails tb when the plugin cannot be built.
func Build(tb testing.TB, name string) string {
	tb.Helper()
	root, err := RepoRoot()
	if err != nil {
		tb.Fatalf("build plugin %s: %v", name, err)
	}
	path, err := BuildTo(filepath.Join(root, CacheDir), name)
	if err != nil {
		tb.Fatalf("build plugin %s: %v", name, err)
	}
	return path
}

// BuildAll builds every example plugin, like Build, and returns the modules'
// paths by plugin name.
func BuildAll(tb testing.TB) map[string]string {
	tb.Helper()
	names, err := Names()
	if err != nil {
		tb.Fatalf("list plugins: %v", err)
	}
	paths := make(map[string]string, len(names))
	for _, name := range names {
		paths[name] = Build(tb, name)
	}
	return paths
}

// BuildTo compiles the example plugin name into dir/<name>.wasm, unless that
// file is newer than every source it depends on, and returns its path.
func BuildTo(dir, name string) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	if name == "" || strings.ContainsAny(name, `/\`) || strings.HasPrefix(name, ".") {
		return "", fmt.Errorf("invalid plugin name %q", name)
	}
	src := filepath.Join(root, PluginsDir, name)
	if _, err := os.Stat(filepath.Join(src, "main.go")); err != nil {
		return "", fmt.Errorf("no plugin %q in %s: %w", name, filepath.Join(root, PluginsDir), err)
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, name+".wasm")

	buildMu.Lock()
	defer buildMu.Unlock()

	fresh, err := upToDate(out, root, src)
	if err != nil {
		return "", err
	}
	if fresh {
		return out, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(dir, "."+name+"-*.wasm")
	if err != nil {
		return "", err
	}
	tmpName := tmp.Name()
	tmp.Close()
	defer os.Remove(tmpName) // a no-op once renamed

	goBin, err := goTool()
	if err != nil {
		return "", err
	}
	cmd := exec.Command(goBin, "build", "-buildmode=c-shared", "-trimpath", "-o", tmpName, "./"+PluginsDir+"/"+name)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
	var stderr bytes.Buffer
	cmd.Stdout = &stderr
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", name, err, stderr.Bytes())
	}
	if err := os.Rename(tmpName, out); err != nil {
		return "", err
	}
	return out, nil
}

// Names returns the names of all example plugins, sorted: the folders of
// examples/plugins that hold a main.go.
func Names() ([]string, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(filepath.Join(root, PluginsDir))
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		if _, err := os.Stat(filepath.Join(root, PluginsDir, e.Name(), "main.go")); err == nil {
			names = append(names, e.Name())
		}
	}
	slices.Sort(names)
	return names, nil
}

// RepoRoot returns the root of the checkout: the folder of the go.mod that
// declares this module, found from this source file or else from the
// working directory upwards.
func RepoRoot() (string, error) {
	var starts []string
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		starts = append(starts, filepath.Dir(file))
	}
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	for _, dir := range starts {
		for {
			if isModuleRoot(dir) {
				return dir, nil
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	return "", errors.New("cannot find the checkout of " + modulePath + " (no go.mod declaring it above the working directory)")
}

func isModuleRoot(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "module" {
			return f[1] == modulePath
		}
	}
	return false
}

// upToDate reports whether out exists and is newer than every Go source of
// the plugin and of pdk/, and than go.mod and go.sum.
func upToDate(out, root, src string) (bool, error) {
	info, err := os.Stat(out)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	built := info.ModTime()
	var newest time.Time
	note := func(path string) error {
		fi, err := os.Stat(path)
		if err != nil {
			return err
		}
		if fi.ModTime().After(newest) {
			newest = fi.ModTime()
		}
		return nil
	}
	for _, f := range []string{"go.mod", "go.sum"} {
		if err := note(filepath.Join(root, f)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return false, err
		}
	}
	for _, dir := range []string{src, filepath.Join(root, "pdk")} {
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.IsDir() && strings.HasSuffix(path, ".go") {
				return note(path)
			}
			return nil
		})
		if err != nil {
			return false, err
		}
	}
	return built.After(newest), nil
}

// goTool returns the go command on PATH; go test and go run put their own
// toolchain's bin folder first there.
func goTool() (string, error) {
	return exec.LookPath("go")
}

// SDKWasm returns the path of a module shipped in the wasm/ folder of the Extism Go SDK module, the
// conformance corpus: real plugins built by others with real PDKs. The module is in the module cache
// because go.mod requires the SDK for the side-by-side tests.
func SDKWasm(tb testing.TB, name string) string {
	tb.Helper()
	sdkDirOnce.Do(func() {
		out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/extism/go-sdk").Output()
		sdkDir, sdkDirErr = strings.TrimSpace(string(out)), err
	})
	if sdkDirErr != nil {
		tb.Fatalf("locate the Extism Go SDK module (run go mod download): %v", sdkDirErr)
	}
	path := filepath.Join(sdkDir, "wasm", name)
	if _, err := os.Stat(path); err != nil {
		tb.Fatalf("no %s in the Extism Go SDK module: %v", name, err)
	}
	return path
}

var (
	sdkDirOnce sync.Once
	sdkDir     string
	sdkDirErr  error
)

// WithCustomSection returns a copy of a module with a custom section appended: the code and what it does
// are unchanged, its digest is not. Tests use it for "a new version" of a module.
func WithCustomSection(wasm []byte, name, content string) []byte {
	payload := append([]byte{byte(len(name))}, name...)
	payload = append(payload, content...)
	out := append(bytes.Clone(wasm), 0, byte(len(payload)))
	return append(out, payload...)
}
