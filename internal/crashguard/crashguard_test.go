package crashguard

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func open(t *testing.T, dir string) *Guard {
	t.Helper()
	g, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// A load that ends is forgotten; a load still recorded at two starts in a row (the second time as the one
// suspect) is refused from then on, across restarts, until the version changes; other plugins load.
func TestCrashedVersionRefused(t *testing.T) {
	dir := t.TempDir()
	g := open(t, dir)
	if err := g.Begin("ns/good", "v1"); err != nil {
		t.Fatal(err)
	}
	g.Done("ns/good")
	if err := g.Begin("ns/bad", "v1"); err != nil {
		t.Fatal(err)
	}
	// The host crashes here: no Done. One crash makes a suspect, which loads again.
	g = open(t, dir)
	if err := g.Begin("ns/bad", "v1"); err != nil {
		t.Fatalf("after one crash: %v", err)
	}
	// The host crashes again during the suspect's load.

	for restart := range 2 {
		g = open(t, dir)
		var ce *CrashedError
		err := g.Begin("ns/bad", "v1")
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), "crashed the host while it loaded it") {
			t.Fatalf("restart %d: Begin of the crashed version: %v", restart, err)
		}
		if err := g.Begin("ns/good", "v1"); err != nil {
			t.Fatalf("restart %d: another plugin: %v", restart, err)
		}
		g.Done("ns/good")
	}
	if err := g.Begin("ns/bad", "v2"); err != nil {
		t.Fatalf("a new version: %v", err)
	}
	g.Done("ns/bad")
	g = open(t, dir)
	if err := g.Begin("ns/bad", "v1"); err != nil {
		t.Errorf("the old version after the new one loaded: %v", err)
	}
}

// A host that crashes while several plugins load cannot tell which one crashed it: none is refused;
// suspects load again one at a time, beside other loads, and the suspect loading when the host crashes
// again is refused from then on, while the others, which other teams may own, load.
func TestCrashBesideOtherLoads(t *testing.T) {
	dir := t.TempDir()
	g := open(t, dir)
	for _, p := range []string{"ns/bad", "other/innocent", "third/one"} {
		if err := g.Begin(p, "v1"); err != nil {
			t.Fatal(err)
		}
	}
	// The host crashes with three loads in progress: all suspects, none refused.
	g = open(t, dir)
	if err := g.Begin("other/innocent", "v1"); err != nil {
		t.Fatalf("a plugin that loaded beside the crash: %v", err)
	}
	// Suspects load one at a time: the next suspect is told to come back until that Done.
	if err := g.Begin("ns/bad", "v1"); !errors.Is(err, ErrSuspectLoading) {
		t.Fatalf("a suspect while another suspect loads: %v", err)
	}
	g.Done("other/innocent")
	if err := g.Begin("ns/bad", "v1"); err != nil {
		t.Fatalf("a suspect after the other's load: %v", err)
	}
	if err := g.Begin("new/plugin", "v1"); err != nil { // not a suspect: loads beside it
		t.Fatal(err)
	}
	// The host crashes again, during ns/bad's load and new/plugin's.
	g = open(t, dir)
	var ce *CrashedError
	if err := g.Begin("ns/bad", "v1"); !errors.As(err, &ce) {
		t.Fatalf("the suspect loading when the host crashed again: %v", err)
	}
	for _, p := range []string{"other/innocent", "new/plugin", "third/one"} {
		if err := g.Begin(p, "v1"); err != nil {
			t.Fatalf("%s after the second crash: %v", p, err)
		}
		g.Done(p)
	}
}

func TestForgetAndTornRecords(t *testing.T) {
	dir := t.TempDir()
	g := open(t, dir)
	if err := g.Begin("ns/bad", "v1"); err != nil {
		t.Fatal(err)
	}
	g = open(t, dir)
	g.Forget("ns/bad")
	if err := g.Begin("ns/bad", "v1"); err != nil {
		t.Errorf("after Forget: %v", err)
	}
	// A record torn by a crash is dropped, not a reason to refuse or to fail.
	if err := os.WriteFile(filepath.Join(dir, "0123.json"), []byte(`{"plugin":"ns/x","ver`), 0o600); err != nil {
		t.Fatal(err)
	}
	g = open(t, dir)
	if err := g.Begin("ns/x", "v1"); err != nil {
		t.Errorf("after a torn record: %v", err)
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(filepath.Join(file, "sub")); err == nil {
		t.Error("Open under a file: no error")
	}
}

func TestHammer(t *testing.T) {
	g := open(t, t.TempDir())
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := []string{"ns/a", "ns/b"}[i%2]
			for range 50 {
				if err := g.Begin(p, "v1"); err != nil {
					t.Error(err)
					return
				}
				g.Done(p)
			}
		}()
	}
	wg.Wait()
}
