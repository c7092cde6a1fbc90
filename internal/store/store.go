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
	"syscall"
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
	// ErrReadOnly: the store was opened read-only (a node host) and cannot be written.
	ErrReadOnly = errors.New("the store is read-only")
)

// DefaultMaxBytes bounds what Get reads when Options.MaxBytes is zero; it matches the controller's
// default module size limit.
const DefaultMaxBytes int64 = 256 << 20

// CorruptError is returned by Get when the file of a digest is not that
// module: its content hashes to something else (Got), or it is not a regular
// file of the expected size (Problem). A writable store has removed it
// (Removed reports whether that worked), so the module can be stored again; a
// read-only one leaves it to the writer. It matches ErrCorrupt with errors.Is.
type CorruptError struct {
	Digest, Got, Path string
	// Problem, when set, says what is wrong instead of Got, such as "is a
	// symbolic link, not a regular file".
	Problem  string
	Removed  bool
	ReadOnly bool
}

func (e *CorruptError) Error() string {
	what := "it was removed; store the module again"
	switch {
	case e.ReadOnly:
		what = "left in place (read-only store); whoever writes the store must store the module again"
	case !e.Removed:
		what = "removing it failed; delete the file by hand and store the module again"
	}
	problem := e.Problem
	if problem == "" {
		problem = "hashes to " + e.Got
	}
	return fmt.Sprintf("stored module %s is corrupt: %s %s; %s", e.Digest, e.Path, problem, what)
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
	// ReadOnly opens the store for reading only, as node hosts do on their
	// read-only mount of the shared cache: Open creates nothing, Put, Touch and
	// Remove return ErrReadOnly, and Get leaves a corrupt file in place.
	ReadOnly bool
	// MaxBytes bounds the size of a module Get reads; a larger file is
	// corrupt. Default DefaultMaxBytes.
	MaxBytes int64
}

// Store keeps modules by digest under <root>/modules/sha256/<hex>.wasm. Every
// method is safe to call from many goroutines and from many processes sharing
// the folder (the controller and every node host on a ReadWriteMany volume):
// files appear only whole, by rename, and are never modified in place.
type Store struct {
	dir       string
	now       func() time.Time
	readOnly  bool
	maxBytes  int64
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
	s := &Store{dir: filepath.Join(root, filepath.FromSlash(ModulesDir)), now: opts.Now,
		readOnly: opts.ReadOnly, maxBytes: opts.MaxBytes}
	if s.now == nil {
		s.now = time.Now
	}
	if s.maxBytes <= 0 {
		s.maxBytes = DefaultMaxBytes
	}
	if s.readOnly {
		if fi, err := os.Stat(root); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("open store: the cache root %s is not a folder (%v); check that the cache volume is mounted", root, err)
		}
	} else if err := os.MkdirAll(s.dir, 0o755); err != nil {
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
	if s.readOnly {
		return Entry{}, fmt.Errorf("store module: %w", ErrReadOnly)
	}
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
// hashes to it. A missing module is ErrNotFound. A file that is not the module
// (another content, a symbolic link, a named pipe or other special file, a
// file over Options.MaxBytes) is reported as a *CorruptError and, unless the
// store is read-only, removed, so that whoever stores modules stores it again.
func (s *Store) Get(digest string) ([]byte, error) { return s.GetSize(digest, -1) }

// GetSize is Get for a module whose size is known (status.artifact.size): a
// file of another size is corrupt, found so before reading it. A negative
// size means unknown.
func (s *Store) GetSize(digest string, size int64) ([]byte, error) {
	h, err := ParseDigest(digest)
	if err != nil {
		return nil, fmt.Errorf("get module: %w", err)
	}
	p := s.path(h)
	// Lstat, then open without following links or blocking, then check the
	// opened file again: a symlink planted in the shared folder could point
	// anywhere, and opening a FIFO for reading would block forever.
	fi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("get module: %w: sha256:%s is not at %s", ErrNotFound, h, p)
	}
	if err != nil {
		return nil, fmt.Errorf("get module sha256:%s: %w", h, err)
	}
	if problem := s.fileProblem(fi, size); problem != "" {
		return nil, s.corruptFile(h, p, fi, &CorruptError{Problem: problem})
	}
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("get module: %w: sha256:%s is not at %s", ErrNotFound, h, p)
	}
	if err != nil {
		return nil, fmt.Errorf("get module sha256:%s: %w", h, err)
	}
	defer f.Close()
	ofi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("get module sha256:%s: %w", h, err)
	}
	if problem := s.fileProblem(ofi, size); problem != "" || !os.SameFile(fi, ofi) {
		if problem == "" {
			problem = "changed while it was opened"
		}
		return nil, s.corruptFile(h, p, ofi, &CorruptError{Problem: problem})
	}
	data := make([]byte, 0, ofi.Size())
	buf := bytes.NewBuffer(data)
	n, err := io.Copy(buf, io.LimitReader(f, ofi.Size()+1))
	if err != nil {
		return nil, fmt.Errorf("get module sha256:%s: %w", h, err)
	}
	if n != ofi.Size() {
		return nil, s.corruptFile(h, p, ofi, &CorruptError{Problem: fmt.Sprintf("changed size while it was read (%d bytes, then more)", ofi.Size())})
	}
	data = buf.Bytes()
	sum := sha256.Sum256(data)
	if got := hex.EncodeToString(sum[:]); got != h {
		return nil, s.corruptFile(h, p, ofi, &CorruptError{Got: "sha256:" + got})
	}
	return data, nil
}

// fileProblem says why fi cannot be a stored module of the given size (negative: unknown).
func (s *Store) fileProblem(fi fs.FileInfo, size int64) string {
	switch m := fi.Mode(); {
	case m&fs.ModeSymlink != 0:
		return "is a symbolic link, not a regular file"
	case m&fs.ModeNamedPipe != 0:
		return "is a named pipe, not a regular file"
	case !m.IsRegular():
		return fmt.Sprintf("is not a regular file (mode %s)", m)
	case size >= 0 && fi.Size() != size:
		return fmt.Sprintf("is %d bytes, not the %d bytes recorded", fi.Size(), size)
	case fi.Size() > s.maxBytes:
		return fmt.Sprintf("is %d bytes, more than the %d byte limit", fi.Size(), s.maxBytes)
	}
	return ""
}

// corruptFile completes e, counts it and, in a writable store, removes the file
// that was examined (fi) unless a writer has renamed another into place since.
func (s *Store) corruptFile(h, p string, fi fs.FileInfo, e *CorruptError) error {
	s.corrupt.Inc()
	e.Digest, e.Path, e.ReadOnly = "sha256:"+h, p, s.readOnly
	if !s.readOnly {
		if now, err := os.Lstat(p); err == nil && os.SameFile(fi, now) {
			e.Removed = os.Remove(p) == nil
		} else {
			e.Removed = true
		}
	}
	return fmt.Errorf("get module: %w", e)
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
	fi, err := os.Lstat(p)
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
	if s.readOnly {
		return fmt.Errorf("touch module: %w", ErrReadOnly)
	}
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
	if s.readOnly {
		return fmt.Errorf("remove module: %w", ErrReadOnly)
	}
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
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return false, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() || fi.Size() != size {
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
