// Package crashguard keeps a host from crashing again and again on the same plugin version. Before a host
// loads a version it records it in a folder on node-local disk and removes the record once the load ends; a
// record still there when the host starts again makes that version a suspect, which loads again alone among
// suspects; a suspect whose load is still recorded at the next start crashed the host twice, and the guard
// refuses it from then on, across restarts, until the plugin's version (its digest or spec) changes.
//
//	g, err := crashguard.Open("/var/lib/wasm-operator/host")
//	if err := g.Begin("default/greet", versionKey); err != nil {
//		return err // a *CrashedError: report it, do not load
//	}
//	defer g.Done("default/greet")
//	load()
package crashguard

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Record states.
const (
	stateLoading = "loading"
	stateCrashed = "crashed"
	// stateSuspect is a load that was in progress when the host stopped: it may have crashed the host,
	// or a call or another load beside it may have. Suspects load again one at a time (see Begin),
	// beside loads that are not suspect; when the host stops again during a suspect's load, that suspect
	// is refused and the loads beside it become suspects.
	stateSuspect = "suspect"
)

type record struct {
	Plugin  string    `json:"plugin"`
	Version string    `json:"version"`
	State   string    `json:"state"`
	Suspect bool      `json:"suspect,omitempty"` // a loading record: the load of a suspect
	Since   time.Time `json:"since"`
}

// ErrSuspectLoading is returned by Begin for a suspect while another suspect loads: suspects load one at
// a time, and the caller tries again later rather than hold a worker meanwhile.
var ErrSuspectLoading = errors.New("it was loading when the host last crashed, and waits while another such plugin loads first")

// CrashedError is returned by Begin for a version whose load crashed the host before.
type CrashedError struct {
	Plugin, Version string
	// Since is when the crashed load began.
	Since time.Time
}

func (e *CrashedError) Error() string {
	return fmt.Sprintf("this version crashed the host while it loaded it (at %s); it is not loaded again until the plugin's module or spec changes",
		e.Since.UTC().Format(time.RFC3339))
}

// Guard is the set of records in one folder. It is safe for concurrent use; each plugin has at most one
// record.
type Guard struct {
	dir string
	mu  sync.Mutex // guards the records and held
	// suspects is held by the load of a suspect, so that suspects load one at a time.
	suspects sync.Mutex
	held     map[string]bool // plugin -> its load holds suspects
}

// Open opens (creating it) the guard's folder and marks the loads that were in progress when the host last
// stopped as suspects, or as crashed for a suspect's second: a crash during a load does not prove the
// load caused it (a call of another plugin, an OOM kill or another plugin's load beside it may have), so
// another team's plugin is never refused for one crash.
func Open(dir string) (*Guard, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create crash guard folder: %w", err)
	}
	g := &Guard{dir: dir, held: map[string]bool{}}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read crash guard folder: %w", err)
	}
	loading := map[string]record{} // by path
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		path := filepath.Join(dir, e.Name())
		r, err := readRecord(path)
		if err != nil { // torn by the crash: nothing to refuse by
			os.Remove(path)
			continue
		}
		if r.State == stateLoading {
			loading[path] = r
		}
	}
	for path, r := range loading {
		// Suspects load one at a time, so at most one was loading as a suspect: that one crashed the
		// host twice. Any other load becomes a suspect: the host may have crashed during a call, or
		// have been killed, while it loaded.
		state := stateSuspect
		if r.Suspect {
			state = stateCrashed
		}
		if err := writeRecord(path, record{Plugin: r.Plugin, Version: r.Version, Since: r.Since, State: state}); err != nil {
			return nil, err
		}
	}
	return g, nil
}

// Begin records that the host starts loading version of plugin, unless that version crashed the host
// before: then it returns a *CrashedError and records nothing. A crash record of another version of the
// plugin is dropped: the plugin changed. A suspect version gets ErrSuspectLoading while another suspect
// loads. After a nil error, call Done when the load ends.
func (g *Guard) Begin(plugin, version string) error {
	path := g.path(plugin)
	g.mu.Lock()
	r, err := readRecord(path)
	g.mu.Unlock()
	known := err == nil && r.Plugin == plugin && r.Version == version
	if known && r.State == stateCrashed {
		return &CrashedError{Plugin: plugin, Version: version, Since: r.Since}
	}
	suspect := known && r.State == stateSuspect
	if suspect && !g.suspects.TryLock() {
		return ErrSuspectLoading
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	err = writeRecord(path, record{Plugin: plugin, Version: version, State: stateLoading, Since: time.Now(), Suspect: suspect})
	if err != nil {
		if suspect {
			g.suspects.Unlock()
		}
		return err
	}
	g.held[plugin] = suspect
	return nil
}

// Done records that the load Begin recorded has ended, whether it succeeded or failed.
func (g *Guard) Done(plugin string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	path := g.path(plugin)
	if r, err := readRecord(path); err == nil && r.State == stateLoading {
		os.Remove(path)
	}
	if g.held[plugin] {
		g.suspects.Unlock()
	}
	delete(g.held, plugin)
}

// Forget drops every record of plugin, as when it is deleted or no longer placed on the node.
func (g *Guard) Forget(plugin string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	os.Remove(g.path(plugin))
}

func (g *Guard) path(plugin string) string {
	sum := sha256.Sum256([]byte(plugin))
	return filepath.Join(g.dir, hex.EncodeToString(sum[:16])+".json")
}

func readRecord(path string) (record, error) {
	var r record
	b, err := os.ReadFile(path)
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, err
	}
	if r.Plugin == "" || r.Version == "" {
		return r, errors.New("incomplete record")
	}
	return r, nil
}

// writeRecord writes a temporary file, syncs it and renames it into place, so that a crash right after
// leaves either the old record or the new one.
func writeRecord(path string, r record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".record-*")
	if err != nil {
		return fmt.Errorf("write crash guard record: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("write crash guard record: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write crash guard record: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write crash guard record: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write crash guard record: %w", err)
	}
	return nil
}
