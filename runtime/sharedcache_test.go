package runtime

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/wasm-operator/wasm-operator/internal/testplugins"
)

// snapshot lists the files under dir with their sizes and modification times.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			fi, _ := os.Lstat(p)
			out[p] = fi.Mode().String() + fi.ModTime().String() + string(rune(fi.Size()))
		}
		return nil
	})
	return out
}

// TestSharedCacheIsOnlyRead: a host engine reuses what the controller compiled into the shared
// cache, compiles what is missing into its node-local cache, and never writes the shared one; a
// FIFO planted among the shared entries is skipped without blocking.
func TestSharedCacheIsOnlyRead(t *testing.T) {
	ctx := context.Background()
	shared, local := t.TempDir(), t.TempDir()
	greet, err := os.ReadFile(testplugins.Build(t, "greet"))
	if err != nil {
		t.Fatal(err)
	}
	other, err := os.ReadFile(testplugins.Build(t, "http-fetch"))
	if err != nil {
		t.Fatal(err)
	}

	controller, err := NewEngine(ctx, EngineConfig{CacheDir: shared})
	if err != nil {
		t.Fatal(err)
	}
	m, err := controller.Compile(ctx, greet)
	if err != nil {
		t.Fatal(err)
	}
	m.Close(ctx)
	controller.Close(ctx)
	subs, _ := filepath.Glob(filepath.Join(CompiledDir(shared), "wazero-*"))
	if len(subs) != 1 {
		t.Fatalf("wazero's folder in the shared cache: %v", subs)
	}
	if err := syscall.Mkfifo(filepath.Join(subs[0], "planted"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, shared)

	host, err := NewEngine(ctx, EngineConfig{CacheDir: local, SharedCacheDir: shared})
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close(ctx)
	done := make(chan error, 1)
	go func() {
		for _, wasm := range [][]byte{greet, other} {
			m, err := host.Compile(ctx, wasm)
			if err != nil {
				done <- err
				return
			}
			m.Close(ctx)
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("compiling blocked on the planted FIFO")
	}
	after := snapshot(t, shared)
	if len(after) != len(before) {
		t.Fatalf("the shared cache changed: %d files before, %d after", len(before), len(after))
	}
	for p, v := range before {
		if after[p] != v {
			t.Fatalf("the host touched %s in the shared cache", p)
		}
	}
	// The controller's entry was linked (no copy on the node-local volume), and the host's own
	// compilation went to the local cache as a file.
	links, files := 0, 0
	for p, mode := range snapshot(t, CompiledDir(local)) {
		if filepath.Base(p) == "planted" {
			t.Fatalf("the planted FIFO was linked (%s)", mode)
		}
		if fi, _ := os.Lstat(p); fi.Mode()&os.ModeSymlink != 0 {
			links++
		} else {
			files++
		}
	}
	if links != 1 || files != 1 {
		t.Fatalf("node-local cache holds %d links and %d files, want a link to the shared entry and the host's own", links, files)
	}
}
