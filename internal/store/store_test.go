package store

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestMain doubles as a writer process for TestPutManyProcesses.
func TestMain(m *testing.M) {
	if root := os.Getenv("STORE_TEST_PUT_ROOT"); root != "" {
		s, err := Open(root, Options{})
		if err == nil {
			n, _ := strconv.Atoi(os.Getenv("STORE_TEST_PUT_SIZE"))
			for i := 0; i < 20 && err == nil; i++ {
				_, err = s.Put(payload(n))
			}
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// payload returns n deterministic bytes that start like a wasm module.
func payload(n int) []byte {
	b := make([]byte, n)
	copy(b, "\x00asm\x01\x00\x00\x00")
	for i := 8; i < n; i++ {
		b[i] = byte(i * 7)
	}
	return b
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newStore(t *testing.T) (*Store, *clock, string) {
	t.Helper()
	root := t.TempDir()
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	s, err := Open(root, Options{Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	return s, c, root
}

func TestPutGet(t *testing.T) {
	s, c, root := newStore(t)
	data := payload(1000)
	e, err := s.Put(data)
	if err != nil {
		t.Fatal(err)
	}
	rel, _ := RelPath(e.Digest)
	if e.Digest != digest(data) || e.Size != 1000 || e.Path != filepath.Join(root, rel) || !e.LastUsed.Equal(c.now()) {
		t.Fatalf("entry = %+v", e)
	}
	if rel != "modules/sha256/"+strings.TrimPrefix(e.Digest, "sha256:")+".wasm" {
		t.Fatalf("RelPath = %s", rel)
	}
	got, err := s.Get(e.Digest)
	if err != nil || string(got) != string(data) {
		t.Fatalf("Get: %v", err)
	}
	// bare hex works too
	if _, err := s.Get(strings.TrimPrefix(e.Digest, "sha256:")); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.Has(e.Digest); !ok || err != nil {
		t.Fatalf("Has = %v %v", ok, err)
	}
	// Put again: idempotent, marks it used
	c.add(time.Hour)
	e2, err := s.Put(data)
	if err != nil || e2.Digest != e.Digest || !e2.LastUsed.Equal(c.now()) {
		t.Fatalf("second Put = %+v %v", e2, err)
	}
	if es, _ := s.List(); len(es) != 1 {
		t.Fatalf("List = %+v", es)
	}
	if err := s.Remove(e.Digest); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(e.Digest); err != nil {
		t.Fatalf("removing twice: %v", err)
	}
	if ok, err := s.Has(e.Digest); ok || err != nil {
		t.Fatalf("Has after Remove = %v %v", ok, err)
	}
}

func TestBadInput(t *testing.T) {
	s, _, _ := newStore(t)
	missing := digest([]byte("never stored"))
	tests := []struct {
		name string
		call func() error
		is   error
		want string
	}{
		{"get missing", func() error { _, err := s.Get(missing); return err }, ErrNotFound, "module not in the store: " + missing + " is not at"},
		{"stat missing", func() error { _, err := s.Stat(missing); return err }, ErrNotFound, "is not at"},
		{"touch missing", func() error { return s.Touch(missing) }, ErrNotFound, "touch module: module not in the store"},
		{"get short digest", func() error { _, err := s.Get("sha256:abc"); return err }, ErrInvalidDigest, `invalid digest "sha256:abc": want sha256: followed by 64 hex digits`},
		{"get non-hex digest", func() error { _, err := s.Get(strings.Repeat("g", 64)); return err }, ErrInvalidDigest, "invalid digest"},
		{"path traversal", func() error { _, err := s.Path("../../etc/passwd"); return err }, ErrInvalidDigest, "invalid digest"},
		{"has bad digest", func() error { _, err := s.Has("md5:x"); return err }, ErrInvalidDigest, "invalid digest"},
		{"remove bad digest", func() error { return s.Remove("") }, ErrInvalidDigest, "invalid digest"},
		{"gc bad reference", func() error { _, err := s.GC(GCPolicy{Referenced: []string{"x"}}); return err }, ErrInvalidDigest, "gc: referenced digest"},
		{"relpath bad digest", func() error { _, err := RelPath("sha256:"); return err }, ErrInvalidDigest, "invalid digest"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %v saying %q", err, tc.is, tc.want)
			}
		})
	}
}

func TestOpenUnwritable(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	os.WriteFile(f, nil, 0o644)
	if _, err := Open(f, Options{}); err == nil || !strings.Contains(err.Error(), "check that the cache volume is mounted writable") {
		t.Fatalf("err = %v", err)
	}
}

func TestCorruptFileIsRemovedAndCanBeStoredAgain(t *testing.T) {
	tests := []struct {
		name   string
		damage func(p string) error
	}{
		{"flipped byte", func(p string) error {
			b, _ := os.ReadFile(p)
			b[100] ^= 0xff
			return os.WriteFile(p, b, 0o644)
		}},
		{"truncated", func(p string) error { return os.Truncate(p, 10) }},
		{"empty", func(p string) error { return os.Truncate(p, 0) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			s, err := Open(t.TempDir(), Options{Registerer: reg})
			if err != nil {
				t.Fatal(err)
			}
			data := payload(4096)
			e, _ := s.Put(data)
			if err := tc.damage(e.Path); err != nil {
				t.Fatal(err)
			}
			_, err = s.Get(e.Digest)
			var ce *CorruptError
			if !errors.As(err, &ce) || !errors.Is(err, ErrCorrupt) || !ce.Removed || ce.Digest != e.Digest {
				t.Fatalf("err = %v", err)
			}
			if !strings.Contains(err.Error(), "it was removed; store the module again") {
				t.Fatalf("message %q does not say what to do", err)
			}
			if ok, _ := s.Has(e.Digest); ok {
				t.Fatal("corrupt file still there")
			}
			if got := testutil.ToFloat64(s.corrupt); got != 1 {
				t.Fatalf("corrupt_total = %v", got)
			}
			if _, err := s.Put(data); err != nil {
				t.Fatal(err)
			}
			if b, err := s.Get(e.Digest); err != nil || string(b) != string(data) {
				t.Fatalf("after storing again: %v", err)
			}
		})
	}
}

func TestPutRepairsCorruptCopy(t *testing.T) {
	s, _, _ := newStore(t)
	data := payload(512)
	e, _ := s.Put(data)
	os.WriteFile(e.Path, payload(511), 0o644)
	if _, err := s.Put(data); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(e.Digest); err != nil {
		t.Fatalf("Put did not replace the damaged copy: %v", err)
	}
}

func TestPutManyGoroutines(t *testing.T) {
	s, _, _ := newStore(t)
	datas := [][]byte{payload(1 << 16), payload(1<<16 + 1), payload(3)}
	var wg sync.WaitGroup
	errs := make(chan error, 64*len(datas))
	for i := 0; i < 64; i++ {
		for _, d := range datas {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := s.Put(d); err != nil {
					errs <- err
					return
				}
				if _, err := s.Get(digest(d)); err != nil {
					errs <- err
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	checkClean(t, s, len(datas))
}

// checkClean asserts the folder holds exactly n intact modules and no
// temporary files.
func checkClean(t *testing.T, s *Store, n int) {
	t.Helper()
	des, _ := os.ReadDir(s.dir)
	if len(des) != n {
		var names []string
		for _, de := range des {
			names = append(names, de.Name())
		}
		t.Fatalf("folder holds %v, want %d modules", names, n)
	}
	es, err := s.List()
	if err != nil || len(es) != n {
		t.Fatalf("List = %v %v", es, err)
	}
	for _, e := range es {
		if _, err := s.Get(e.Digest); err != nil {
			t.Fatal(err)
		}
	}
}

func TestPutManyProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	root := t.TempDir()
	s, err := Open(root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	const size = 1 << 20
	var cmds []*exec.Cmd
	for i := 0; i < 3; i++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "STORE_TEST_PUT_ROOT="+root, "STORE_TEST_PUT_SIZE="+strconv.Itoa(size))
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	for i := 0; i < 20; i++ {
		if _, err := s.Put(payload(size)); err != nil {
			t.Error(err)
		}
		if _, err := s.Get(digest(payload(size))); err != nil {
			t.Error(err)
		}
	}
	for _, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("writer process: %v", err)
		}
	}
	checkClean(t, s, 1)
}

func TestGCGrace(t *testing.T) {
	s, c, _ := newStore(t)
	old, kept, fresh := payload(100), payload(200), payload(300)
	eOld, _ := s.Put(old)
	eKept, _ := s.Put(kept)
	c.add(50 * time.Minute)
	eFresh, _ := s.Put(fresh)
	c.add(20 * time.Minute) // old and kept: 70m unused; fresh: 20m

	res, err := s.GC(GCPolicy{Referenced: []string{eKept.Digest}, Grace: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Removed) != 1 || res.Removed[0].Digest != eOld.Digest {
		t.Fatalf("removed %+v, want only the old unreferenced module", res.Removed)
	}
	if res.Entries != 2 || res.Bytes != 500 {
		t.Fatalf("result %+v", res)
	}
	// GC marked the referenced module used now: once dereferenced it gets a
	// full grace period.
	c.add(59 * time.Minute)
	res, _ = s.GC(GCPolicy{Grace: time.Hour})
	if len(res.Removed) != 1 || res.Removed[0].Digest != eFresh.Digest {
		t.Fatalf("removed %+v, want the fresh module (79m unused)", res.Removed)
	}
	c.add(2 * time.Minute)
	res, _ = s.GC(GCPolicy{Grace: time.Hour})
	if len(res.Removed) != 1 || res.Removed[0].Digest != eKept.Digest || res.Entries != 0 {
		t.Fatalf("removed %+v, want the formerly referenced module", res.Removed)
	}
}

func TestGCSizeCap(t *testing.T) {
	s, c, _ := newStore(t)
	var es []Entry
	for i := 1; i <= 5; i++ {
		e, _ := s.Put(payload(i * 100)) // sizes 100..500, used in this order
		es = append(es, e)
		c.add(time.Minute)
	}
	s.Touch(es[0].Digest) // the smallest is now the most recently used
	c.add(time.Minute)

	// total 1500; referenced: es[1] (200). Cap 800: evict oldest unreferenced
	// first: es[2] (300), es[3] (400) -> 800 left.
	res, err := s.GC(GCPolicy{Referenced: []string{es[1].Digest}, Grace: time.Hour, MaxBytes: 800})
	if err != nil {
		t.Fatal(err)
	}
	var removed []string
	for _, e := range res.Removed {
		removed = append(removed, e.Digest)
	}
	want := []string{es[2].Digest, es[3].Digest}
	if fmt.Sprint(removed) != fmt.Sprint(want) {
		t.Fatalf("removed %v, want %v (oldest unused first)", removed, want)
	}
	if res.Bytes != 800 || res.Entries != 3 || res.OverCap != 0 {
		t.Fatalf("result %+v", res)
	}
	// a cap below what referenced modules need: keep them, report the excess
	res, _ = s.GC(GCPolicy{Referenced: []string{es[1].Digest, es[4].Digest}, Grace: time.Hour, MaxBytes: 100})
	if len(res.Removed) != 1 || res.Removed[0].Digest != es[0].Digest || res.OverCap != 600 {
		t.Fatalf("result %+v", res)
	}
	for _, d := range []string{es[1].Digest, es[4].Digest} {
		if ok, _ := s.Has(d); !ok {
			t.Fatalf("referenced %s evicted", d)
		}
	}
}

func TestGCSkipsModuleUsedMeanwhile(t *testing.T) {
	s, c, _ := newStore(t)
	e, _ := s.Put(payload(10))
	c.add(2 * time.Hour)
	e.LastUsed = e.LastUsed.Add(-time.Second) // as listed before another process touched it
	if s.removeIfUnused(e) {
		t.Fatal("removed a module used since it was listed")
	}
}

func TestGCRemovesStaleTempFiles(t *testing.T) {
	s, c, _ := newStore(t)
	stale := filepath.Join(s.dir, tempPrefix+"abc-1")
	fresh := filepath.Join(s.dir, tempPrefix+"abc-2")
	os.WriteFile(stale, []byte("partial"), 0o644)
	os.WriteFile(fresh, []byte("partial"), 0o644)
	os.WriteFile(filepath.Join(s.dir, "README"), nil, 0o644)
	os.Chtimes(stale, c.now().Add(-2*time.Hour), c.now().Add(-2*time.Hour))
	os.Chtimes(fresh, c.now(), c.now())
	if es, _ := s.List(); len(es) != 0 {
		t.Fatalf("List shows non-modules: %+v", es)
	}
	s.GC(GCPolicy{})
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("stale temporary file kept")
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Fatal("a writer's temporary file in progress was removed")
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	s, err := Open(t.TempDir(), Options{Registerer: reg, Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	a, _ := s.Put(payload(100))
	s.Put(payload(250))
	c.add(2 * time.Hour)
	s.Touch(a.Digest)
	want := `
# HELP wasm_operator_store_bytes Total size of the modules in the shared cache.
# TYPE wasm_operator_store_bytes gauge
wasm_operator_store_bytes 350
# HELP wasm_operator_store_entries Number of modules in the shared cache.
# TYPE wasm_operator_store_entries gauge
wasm_operator_store_entries 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "wasm_operator_store_bytes", "wasm_operator_store_entries"); err != nil {
		t.Fatal(err)
	}
	s.GC(GCPolicy{Grace: time.Hour})
	s.GC(GCPolicy{MaxBytes: 1})
	want = `
# HELP wasm_operator_store_bytes Total size of the modules in the shared cache.
# TYPE wasm_operator_store_bytes gauge
wasm_operator_store_bytes 0
# HELP wasm_operator_store_corrupt_total Stored modules found not to match their digest (and removed).
# TYPE wasm_operator_store_corrupt_total counter
wasm_operator_store_corrupt_total 0
# HELP wasm_operator_store_entries Number of modules in the shared cache.
# TYPE wasm_operator_store_entries gauge
wasm_operator_store_entries 0
# HELP wasm_operator_store_evictions_total Modules removed from the shared cache by garbage collection, by reason (unreferenced, size).
# TYPE wasm_operator_store_evictions_total counter
wasm_operator_store_evictions_total{reason="size"} 1
wasm_operator_store_evictions_total{reason="unreferenced"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(t.TempDir(), Options{Registerer: reg}); err == nil {
		t.Fatal("registering a second store's metrics on the same registry worked")
	}
}

// TestPlantedFileIsRefused: whoever can write the shared folder plants a symbolic link (to a module
// elsewhere or to a secret), a named pipe (which would block a reader forever) or an oversized file
// as <hex>.wasm. Get refuses each without following or blocking, says what it found, and a writable
// store removes it so the module can be stored again.
func TestPlantedFileIsRefused(t *testing.T) {
	data := payload(4096)
	d := digest(data)
	tests := []struct {
		name, want string
		plant      func(t *testing.T, p string)
		size       int64
		max        int64
	}{
		{"symlink to the module", "is a symbolic link, not a regular file", func(t *testing.T, p string) {
			other := filepath.Join(t.TempDir(), "real.wasm")
			os.WriteFile(other, data, 0o644)
			if err := os.Symlink(other, p); err != nil {
				t.Fatal(err)
			}
		}, -1, 0},
		{"named pipe", "is a named pipe, not a regular file", func(t *testing.T, p string) {
			if err := syscall.Mkfifo(p, 0o644); err != nil {
				t.Fatal(err)
			}
		}, -1, 0},
		{"other size than recorded", "is 4097 bytes, not the 4096 bytes recorded", func(t *testing.T, p string) {
			os.WriteFile(p, append(payload(4096), 0), 0o644)
		}, 4096, 0},
		{"over the size limit", "is 4096 bytes, more than the 1024 byte limit", func(t *testing.T, p string) {
			os.WriteFile(p, data, 0o644)
		}, -1, 1024},
	}
	for _, tc := range tests {
		for _, readOnly := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/readOnly=%v", tc.name, readOnly), func(t *testing.T) {
				root := t.TempDir()
				w, err := Open(root, Options{})
				if err != nil {
					t.Fatal(err)
				}
				s, err := Open(root, Options{ReadOnly: readOnly, MaxBytes: tc.max})
				if err != nil {
					t.Fatal(err)
				}
				p, _ := s.Path(d)
				tc.plant(t, p)
				done := make(chan error, 1)
				go func() { _, err := s.GetSize(d, tc.size); done <- err }()
				select {
				case err = <-done:
				case <-time.After(10 * time.Second):
					t.Fatal("Get blocked on the planted file")
				}
				var ce *CorruptError
				if !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("err = %v, want a CorruptError saying %q", err, tc.want)
				}
				_, lerr := os.Lstat(p)
				if readOnly {
					if ce.Removed || lerr != nil || !strings.Contains(err.Error(), "left in place (read-only store)") {
						t.Fatalf("a read-only store touched the file (removed %v, %v): %v", ce.Removed, lerr, err)
					}
					return
				}
				if !ce.Removed || lerr == nil {
					t.Fatalf("the planted file was not removed: %v", err)
				}
				if _, err := w.Put(data); err != nil {
					t.Fatal(err)
				}
				if b, err := w.GetSize(d, int64(len(data))); err != nil || string(b) != string(data) {
					t.Fatalf("after storing again: %v", err)
				}
			})
		}
	}
}

// TestPutOverPlantedPipe: Put checks an existing file without blocking on a named pipe and replaces it.
func TestPutOverPlantedPipe(t *testing.T) {
	s, _, _ := newStore(t)
	data := payload(100)
	p, _ := s.Path(digest(data))
	if err := syscall.Mkfifo(p, 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := s.Put(data); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Put blocked on the planted pipe")
	}
	if b, err := s.Get(digest(data)); err != nil || string(b) != string(data) {
		t.Fatalf("Get after Put: %v", err)
	}
}

func TestReadOnlyStore(t *testing.T) {
	root := t.TempDir()
	w, _ := Open(root, Options{})
	e, _ := w.Put(payload(64))
	s, err := Open(root, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if b, err := s.Get(e.Digest); err != nil || len(b) != 64 {
		t.Fatalf("read: %v", err)
	}
	for name, err := range map[string]error{
		"Put":    func() error { _, err := s.Put(payload(65)); return err }(),
		"Touch":  s.Touch(e.Digest),
		"Remove": s.Remove(e.Digest),
	} {
		if !errors.Is(err, ErrReadOnly) {
			t.Errorf("%s on a read-only store: %v", name, err)
		}
	}
	if _, err := Open(filepath.Join(root, "missing"), Options{ReadOnly: true}); err == nil || !strings.Contains(err.Error(), "check that the cache volume is mounted") {
		t.Fatalf("open a missing read-only root: %v", err)
	}
}
