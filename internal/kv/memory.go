package kv

import (
	"container/heap"
	"container/list"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"
)

// ErrTooLarge is returned when one entry (its key plus its value) is larger than Limits.MaxBytes: no
// eviction can make room for it.
var ErrTooLarge = errors.New("entry too large")

// ErrFull is returned by a store that refuses a write over its limits instead of evicting (Redis).
var ErrFull = errors.New("store full")

// ErrUnavailable wraps the failure of a store that cannot be reached (Redis down).
var ErrUnavailable = errors.New("key-value store unavailable")

// Limits bound one plugin's store.
type Limits struct {
	// MaxBytes bounds the sum of the lengths of every key and value. It must be positive.
	MaxBytes int64
	// MaxKeys bounds the number of entries. It must be positive.
	MaxKeys int
}

func (l Limits) check(key string, value []byte) error {
	if n := int64(len(key) + len(value)); n > l.MaxBytes {
		return fmt.Errorf("%w: key and value take %d bytes, more than the store's limit of %d (permissions.kv.maxBytes)",
			ErrTooLarge, n, l.MaxBytes)
	}
	return nil
}

// Memory is a store in the process's memory: entries with an optional expiry, bounded by Limits, the
// least recently used (read or written) evicted first when a write needs room. Expired entries are
// invisible at once and removed on the next operation. A Memory is safe for concurrent use.
type Memory struct {
	now func() time.Time

	mu      sync.Mutex
	limits  Limits
	entries map[string]*list.Element // of *entry
	lru     list.List                // front: most recently used
	expiry  expiryHeap
	bytes   int64
}

type entry struct {
	key     string
	value   []byte
	expires time.Time // zero: never
	heapIdx int       // index in Memory.expiry, -1 when it has no expiry
}

// NewMemory returns an empty store.
func NewMemory(l Limits) *Memory {
	return &Memory{now: time.Now, limits: l, entries: map[string]*list.Element{}}
}

// SetLimits changes the limits; entries over the new ones are evicted, least recently used first.
func (m *Memory) SetLimits(l Limits) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.limits = l
	m.evict(0, 0)
}

// Get returns a copy of the value of key and whether it is set (and not expired).
func (m *Memory) Get(ctx context.Context, key string) ([]byte, bool, error) {
	v, ok, _, err := m.GetAtMost(ctx, key, math.MaxInt64)
	return v, ok, err
}

// GetAtMost is Get for a caller that can take at most max bytes: a longer value is not copied, and its
// length is returned instead (runtime.KVBoundedGetter).
func (m *Memory) GetAtMost(_ context.Context, key string, max int64) ([]byte, bool, int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.expire()
	el, ok := m.entries[key]
	if !ok {
		return nil, false, 0, nil
	}
	m.lru.MoveToFront(el)
	v := el.Value.(*entry).value
	if int64(len(v)) > max {
		return nil, true, int64(len(v)), nil
	}
	return slices.Clone(v), true, int64(len(v)), nil
}

// Set stores a copy of value under key, for ttl (0: no expiry), evicting the least recently used entries
// when the store would go over its limits. An entry larger than MaxBytes fails with ErrTooLarge and
// changes nothing.
func (m *Memory) Set(_ context.Context, key string, value []byte, ttl time.Duration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.limits.check(key, value); err != nil {
		return err
	}
	m.expire()
	var expires time.Time
	if ttl > 0 {
		expires = m.now().Add(ttl)
	}
	if el, ok := m.entries[key]; ok {
		e := el.Value.(*entry)
		m.bytes += int64(len(value) - len(e.value))
		e.value = slices.Clone(value)
		m.setExpiry(e, expires)
		m.lru.MoveToFront(el)
		m.evict(0, 0)
		return nil
	}
	m.evict(int64(len(key)+len(value)), 1)
	e := &entry{key: key, value: slices.Clone(value), heapIdx: -1}
	m.entries[key] = m.lru.PushFront(e)
	m.bytes += int64(len(key) + len(value))
	m.setExpiry(e, expires)
	return nil
}

// Delete removes key; removing an absent key is not an error.
func (m *Memory) Delete(_ context.Context, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.expire()
	if el, ok := m.entries[key]; ok {
		m.remove(el)
	}
	return nil
}

// List returns the keys that start with prefix, sorted, at most limit of them (limit <= 0: all). Listing
// does not count as a use for eviction.
func (m *Memory) List(_ context.Context, prefix string, limit int) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.expire()
	var keys []string
	for k := range m.entries {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	if limit > 0 && len(keys) > limit {
		keys = keys[:limit]
	}
	return keys, nil
}

// Len returns the number of entries and their size in bytes, expired ones excluded.
func (m *Memory) Len() (keys int, bytes int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.expire()
	return len(m.entries), m.bytes
}

// Entry is one entry of a Snapshot.
type Entry struct {
	Key     string
	Value   []byte
	Expires time.Time // zero: never
}

// Snapshot returns every live entry, sorted by key.
func (m *Memory) Snapshot() []Entry {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.expire()
	out := make([]Entry, 0, len(m.entries))
	for _, el := range m.entries {
		e := el.Value.(*entry)
		out = append(out, Entry{Key: e.key, Value: slices.Clone(e.value), Expires: e.expires})
	}
	slices.SortFunc(out, func(a, b Entry) int { return strings.Compare(a.Key, b.Key) })
	return out
}

// Restore sets the entries of a Snapshot, skipping those already expired; like Set, it evicts to stay
// within the limits and fails on an entry larger than MaxBytes.
func (m *Memory) Restore(entries []Entry) error {
	now := m.now()
	for _, e := range entries {
		var ttl time.Duration
		if !e.Expires.IsZero() {
			if ttl = e.Expires.Sub(now); ttl <= 0 {
				continue
			}
		}
		if err := m.Set(context.Background(), e.Key, e.Value, ttl); err != nil {
			return fmt.Errorf("restore key %q: %w", e.Key, err)
		}
	}
	return nil
}

// evict removes least recently used entries until extraBytes and extraKeys more fit.
func (m *Memory) evict(extraBytes int64, extraKeys int) {
	for m.lru.Len() > 0 && (m.bytes+extraBytes > m.limits.MaxBytes || len(m.entries)+extraKeys > m.limits.MaxKeys) {
		m.remove(m.lru.Back())
	}
}

func (m *Memory) remove(el *list.Element) {
	e := el.Value.(*entry)
	m.lru.Remove(el)
	delete(m.entries, e.key)
	m.bytes -= int64(len(e.key) + len(e.value))
	if e.heapIdx >= 0 {
		heap.Remove(&m.expiry, e.heapIdx)
	}
}

// expire removes the entries whose time has come.
func (m *Memory) expire() {
	if len(m.expiry) == 0 {
		return
	}
	now := m.now()
	for len(m.expiry) > 0 && !m.expiry[0].expires.After(now) {
		m.remove(m.entries[m.expiry[0].key])
	}
}

func (m *Memory) setExpiry(e *entry, expires time.Time) {
	e.expires = expires
	switch {
	case e.heapIdx >= 0 && expires.IsZero():
		heap.Remove(&m.expiry, e.heapIdx)
	case e.heapIdx >= 0:
		heap.Fix(&m.expiry, e.heapIdx)
	case !expires.IsZero():
		heap.Push(&m.expiry, e)
	}
}

// expiryHeap orders entries with an expiry, soonest first.
type expiryHeap []*entry

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].expires.Before(h[j].expires) }
func (h expiryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx, h[j].heapIdx = i, j
}
func (h *expiryHeap) Push(x any) {
	e := x.(*entry)
	e.heapIdx = len(*h)
	*h = append(*h, e)
}
func (h *expiryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	e.heapIdx = -1
	*h = old[:len(old)-1]
	return e
}

// Node holds the Node-scope stores of one host: one per plugin, shared by all its instances and kept
// across its versions. A Node is safe for concurrent use; the zero value is ready.
type Node struct {
	mu     sync.Mutex
	stores map[string]*Memory
}

// Store returns the plugin's store, made on first use, with the given limits.
func (n *Node) Store(plugin string, l Limits) *Memory {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.stores == nil {
		n.stores = map[string]*Memory{}
	}
	s, ok := n.stores[plugin]
	if !ok {
		s = NewMemory(l)
		n.stores[plugin] = s
		return s
	}
	s.SetLimits(l)
	return s
}

// Remove drops the plugin's store and its entries.
func (n *Node) Remove(plugin string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.stores, plugin)
}
