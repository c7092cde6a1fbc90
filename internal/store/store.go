package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ModulesDir is where modules live, relative to the cache root.
const ModulesDir = "modules/sha256"

// tempPrefix starts the names of files being written; List ignores them and
// GC removes those older than tempMaxAge, left behind by a crashed writer.
const (
	tempPrefix = ".tmp-"
	tempMaxAge = time.Hour
)

var (
	// ErrNotFound: no module with that digest is stored.
	ErrNotFound = errors.New("module not in the store")
	// ErrCorrupt: the stored file does not hash to its digest.
	ErrCorrupt = errors.New("stored module is corrupt")
	// ErrInvalidDigest: a digest is not "sha256:" followed by 64 hex digits.
	ErrInvalidDigest = errors.New("invalid digest")
)

// CorruptError is returned by Get when a file's content does not match its
// name. The file has been removed (Removed reports whether that worked), so the
// module can be stored again. It matches ErrCorrupt with errors.Is.
type CorruptError struct {
	Digest, Got, Path string
	Removed           bool
}

func (e *CorruptError) Error() string {
	what := "it was removed; store the module again"
	if !e.Removed {
		what = "removing it failed; delete the file by hand and store the module again"
	}
	return fmt.Sprintf("stored module %s is corrupt: %s hashes to %s; %s", e.Digest, e.Path, e.Got, what)
}

// Is makes errors.Is(err, ErrCorrupt) true.
func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

// Entry describes a stored module.
type Entry struct {
	// Digest is "sha256:<hex>".
	Digest string
	// Path is the file's absolute path.
	Path string
	// Size in bytes.
	Size int64
	// LastUsed is the file's modification time, which Put, Touch and GC (for
	// referenced modules) set to now; eviction goes by it.
	LastUsed time.Time
}

// Options configure a Store.
type Options struct {
	// Registerer, when set, receives the store metrics (see Open).
	Registerer prometheus.Registerer
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Store keeps modules by digest under <root>/modules/sha256/<hex>.wasm. Every
// method is safe to call from many goroutines and from many processes sharing
// the folder (the controller and every node host on a ReadWriteMany volume):
// files appear only whole, by rename, and are never modified in place.
type Store struct {
	dir       string
	now       func() time.Time
	evictions *prometheus.CounterVec
	corrupt   prometheus.Counter
}

// Open returns the store under root, creating its folder if needed. With
// opts.Registerer set it registers:
//
//	wasm_operator_store_bytes                    total size of stored modules (read from the folder at scrape)
//	wasm_operator_store_entries                  number of stored modules (same)
//	wasm_operator_store_evictions_total{reason}  modules removed by GC; reason unreferenced or size
//	wasm_operator_store_corrupt_total            corrupt files found (and removed) by Get
func Open(root string, opts Options) (*Store, error) {
	s := &Store{dir: filepath.Join(root, filepath.FromSlash(ModulesDir)), now: opts.Now}
	if s.now == nil {
		s.now = time.Now
	}
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return nil, fmt.Errorf("open store: %w; check that the cache volume is mounted writable", err)
	}
	s.evictions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wasm_operator_store_evictions_total",
		Help: "Modules removed from the shared cache by garbage collection, by reason (unreferenced, size).",
	}, []string{"reason"})
	s.corrupt = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "wasm_operator_store_corrupt_total",
		Help: "Stored modules found not to match their digest (and removed).",
	})
	if opts.Registerer != nil {
		for _, c := range []prometheus.Collector{s.evictions, s.corrupt, &sizeCollector{s: s}} {
			if err := opts.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("open store: register metrics: %w", err)
			}
		}
	}
	return s, nil
}

// ParseDigest accepts "sha256:<hex>" or bare hex and returns the 64 lowercase
// hex digits.
func ParseDigest(digest string) (string, error) {
	h := strings.ToLower(strings.TrimPrefix(digest, "sha256:"))
	if len(h) != 64 {
		return "", fmt.Errorf("%w %q: want sha256: followed by 64 hex digits", ErrInvalidDigest, digest)
	}
	if _, err := hex.DecodeString(h); err != nil {
		return "", fmt.Errorf("%w %q: want sha256: followed by 64 hex digits", ErrInvalidDigest, digest)
	}
	return h, nil
}

// RelPath returns a module's path relative to the cache root,
// "modules/sha256/<hex>.wasm", as status.artifact.path shows it.
func RelPath(digest string) (string, error) {
	h, err := ParseDigest(digest)
	if err != nil {
		return "", err
	}
	return ModulesDir + "/" + h + ".wasm", nil
}

// Path returns a module's absolute path, whether or not it is stored.
func (s *Store) Path(digest string) (string, error) {
	h, err := ParseDigest(digest)
	if err != nil {
		return "", err
	}
	return s.path(h), nil
}

func (s *Store) path(hexDigest string) string { return filepath.Join(s.dir, hexDigest+".wasm") }

// Put stores data under its sha256 and returns its entry. It is idempotent:
// when an intact copy is already stored it only marks it used. Otherwise it
// writes a temporary file in the same folder, fsyncs it, renames it into
// place and fsyncs the folder, so readers in any process see either no file or
// the whole module, and a crash leaves no partial module behind.
func (s *Store) Put(data []byte) (Entry, error) {
	sum := sha256.Sum256(data)
	h := hex.EncodeToString(sum[:])
	final := s.path(h)
	if ok, _ := fileHashes(final, h, int64(len(data))); ok {
		if err := s.touch(final); err == nil {
			return s.stat(h)
		}
	}
	tmp, err := os.CreateTemp(s.dir, tempPrefix+h[:16]+"-*")
	if err != nil {
		return Entry{}, fmt.Errorf("store module sha256:%s: %w", h, err)
	}
	clean := func(err error) (Entry, error) {
		tmp.Close()
		os.Remove(tmp.Name())
		return Entry{}, fmt.Errorf("store module sha256:%s: %w", h, err)
	}
	if _, err := tmp.Write(data); err != nil {
		return clean(err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		return clean(err)
	}
	if err := tmp.Sync(); err != nil {
		return clean(err)
	}
	if err := tmp.Close(); err != nil {
		return clean(err)
	}
	if err := s.touch(tmp.Name()); err != nil {
		return clean(err)
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return clean(err)
	}
	if err := syncDir(s.dir); err != nil {
		return Entry{}, fmt.Errorf("store module sha256:%s: sync folder: %w", h, err)
	}
	return s.stat(h)
}

// Get returns the module with the given digest after checking that its content
// hashes to it. A missing module is ErrNotFound. A corrupt one is removed and
// reported as a *CorruptError, so that whoever stores modules stores it again.
func (s *Store) Get(digest string) ([]byte, error) {
	h, err := ParseDigest(digest)
	if err != nil {
		return nil, fmt.Errorf("get module: %w", err)
	}
	p := s.path(h)
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("get module: %w: sha256:%s is not at %s", ErrNotFound, h, p)
	}
	if err != nil {
		return nil, fmt.Errorf("get module sha256:%s: %w", h, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("get module sha256:%s: %w", h, err)
	}
	data := make([]byte, 0, fi.Size())
	buf := bytes.NewBuffer(data)
	if _, err := io.Copy(buf, f); err != nil {
		return nil, fmt.Errorf("get module sha256:%s: %w", h, err)
	}
	data = buf.Bytes()
	sum := sha256.Sum256(data)
	if got := hex.EncodeToString(sum[:]); got != h {
		s.corrupt.Inc()
		e := &CorruptError{Digest: "sha256:" + h, Got: "sha256:" + got, Path: p}
		// Remove only the file that was read: a writer may have renamed an
		// intact copy into place meanwhile.
		if now, err := os.Stat(p); err == nil && os.SameFile(fi, now) {
			e.Removed = os.Remove(p) == nil
		} else {
			e.Removed = true
		}
		return nil, fmt.Errorf("get module: %w", e)
	}
	return data, nil
}

// Has reports whether a module with the digest is stored, without reading it.
func (s *Store) Has(digest string) (bool, error) {
	_, err := s.Stat(digest)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// Stat returns the entry of a stored module, or ErrNotFound.
func (s *Store) Stat(digest string) (Entry, error) {
	h, err := ParseDigest(digest)
	if err != nil {
		return Entry{}, fmt.Errorf("stat module: %w", err)
	}
	return s.stat(h)
}

func (s *Store) stat(h string) (Entry, error) {
	p := s.path(h)
	fi, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return Entry{}, fmt.Errorf("stat module: %w: sha256:%s is not at %s", ErrNotFound, h, p)
	}
	if err != nil {
		return Entry{}, fmt.Errorf("stat module sha256:%s: %w", h, err)
	}
	return Entry{Digest: "sha256:" + h, Path: p, Size: fi.Size(), LastUsed: fi.ModTime()}, nil
}

// Touch marks a stored module as used now, which puts it last in the eviction
// order. A missing module is ErrNotFound.
func (s *Store) Touch(digest string) error {
	h, err := ParseDigest(digest)
	if err != nil {
		return fmt.Errorf("touch module: %w", err)
	}
	if err := s.touch(s.path(h)); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("touch module: %w: sha256:%s", ErrNotFound, h)
	} else if err != nil {
		return fmt.Errorf("touch module sha256:%s: %w", h, err)
	}
	return nil
}

func (s *Store) touch(p string) error {
	now := s.now()
	return os.Chtimes(p, now, now)
}

// Remove deletes a stored module; removing a missing one is not an error.
func (s *Store) Remove(digest string) error {
	h, err := ParseDigest(digest)
	if err != nil {
		return fmt.Errorf("remove module: %w", err)
	}
	if err := os.Remove(s.path(h)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove module sha256:%s: %w", h, err)
	}
	return nil
}

// List returns the stored modules, least recently used first. Files that are
// not modules (temporary files of writers in progress, anything else) are
// skipped.
func (s *Store) List() ([]Entry, error) {
	des, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("list modules: %w", err)
	}
	var out []Entry
	for _, de := range des {
		h, ok := strings.CutSuffix(de.Name(), ".wasm")
		if !ok || !de.Type().IsRegular() {
			continue
		}
		if _, err := ParseDigest(h); err != nil || h != strings.ToLower(h) {
			continue
		}
		e, err := s.stat(h)
		if errors.Is(err, ErrNotFound) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("list modules: %w", err)
		}
		out = append(out, e)
	}
	sortByUse(out)
	return out, nil
}

func sortByUse(es []Entry) {
	sort.Slice(es, func(i, j int) bool {
		if !es[i].LastUsed.Equal(es[j].LastUsed) {
			return es[i].LastUsed.Before(es[j].LastUsed)
		}
		return es[i].Digest < es[j].Digest
	})
}

// fileHashes reports whether the file at p has the given size and sha256.
func fileHashes(p, h string, size int64) (bool, error) {
	f, err := os.Open(p)
	if err != nil {
		return false, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.Size() != size {
		return false, err
	}
	d := sha256.New()
	if _, err := io.Copy(d, f); err != nil {
		return false, err
	}
	return hex.EncodeToString(d.Sum(nil)) == h, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
