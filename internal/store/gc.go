package store

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// GCPolicy says what GC keeps.
type GCPolicy struct {
	// Referenced are the digests some WasmPlugin uses (status.artifact and
	// the digests hosts still serve). They are never removed, and GC marks
	// them used now, so a module's last use is also the last time it was
	// seen referenced.
	Referenced []string
	// Grace is how long an unreferenced module is kept after its last use,
	// so that a rollback or a re-created plugin finds it still stored.
	Grace time.Duration
	// MaxBytes caps the store size; 0 means no cap. While the store is
	// larger, unreferenced modules are removed least recently used first,
	// even within their grace period. Referenced modules are kept even if
	// they alone exceed the cap (GCResult.OverCap says by how much).
	MaxBytes int64
}

// GCResult reports what GC did.
type GCResult struct {
	// Removed lists the modules removed.
	Removed []Entry
	// Entries and Bytes describe the store after GC.
	Entries int
	Bytes   int64
	// OverCap is how many bytes the store still exceeds MaxBytes by, which
	// happens only when referenced modules alone exceed it.
	OverCap int64
}

// GC removes modules that are not referenced: those last used longer ago
// than the grace period, then, while the store exceeds its size cap, the
// least recently used of the rest. Before removing a module it checks that
// nobody used it since the listing (another process may have stored it again).
// It also removes temporary files left by writers that crashed.
func (s *Store) GC(p GCPolicy) (GCResult, error) {
	refs := make(map[string]bool, len(p.Referenced))
	for _, d := range p.Referenced {
		h, err := ParseDigest(d)
		if err != nil {
			return GCResult{}, fmt.Errorf("gc: referenced digest: %w", err)
		}
		refs["sha256:"+h] = true
	}
	s.removeStaleTemps()
	entries, err := s.List()
	if err != nil {
		return GCResult{}, fmt.Errorf("gc: %w", err)
	}
	now := s.now()
	var res GCResult
	var candidates []Entry // unreferenced, within grace; least recently used first
	for _, e := range entries {
		switch {
		case refs[e.Digest]:
			if err := s.touch(e.Path); err == nil {
				e.LastUsed = now
			}
			res.Entries++
			res.Bytes += e.Size
		case now.Sub(e.LastUsed) > p.Grace && s.removeIfUnused(e):
			res.Removed = append(res.Removed, e)
			s.evictions.WithLabelValues("unreferenced").Inc()
		default:
			candidates = append(candidates, e)
			res.Entries++
			res.Bytes += e.Size
		}
	}
	for _, e := range candidates {
		if p.MaxBytes <= 0 || res.Bytes <= p.MaxBytes {
			break
		}
		if s.removeIfUnused(e) {
			res.Removed = append(res.Removed, e)
			res.Entries--
			res.Bytes -= e.Size
			s.evictions.WithLabelValues("size").Inc()
		}
	}
	if p.MaxBytes > 0 && res.Bytes > p.MaxBytes {
		res.OverCap = res.Bytes - p.MaxBytes
	}
	return res, nil
}

// removeIfUnused removes e's file if it was not used since e was listed.
func (s *Store) removeIfUnused(e Entry) bool {
	fi, err := os.Stat(e.Path)
	if err != nil || !fi.ModTime().Equal(e.LastUsed) {
		return false
	}
	return os.Remove(e.Path) == nil
}

func (s *Store) removeStaleTemps() {
	des, err := os.ReadDir(s.dir)
	if err != nil {
		return
	}
	now := s.now()
	for _, de := range des {
		if !strings.HasPrefix(de.Name(), tempPrefix) {
			continue
		}
		if fi, err := de.Info(); err == nil && now.Sub(fi.ModTime()) > tempMaxAge {
			os.Remove(filepath.Join(s.dir, de.Name()))
		}
	}
}
