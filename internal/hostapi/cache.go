package hostapi

import (
	"sync"
	"time"
)

// ttlCache is a map whose entries expire, bounded to max entries. When full it drops the expired
// entries, then, if none had expired, an arbitrary one: a review result is cheap to get again, so
// exact LRU order is not worth its bookkeeping.
type ttlCache[K comparable, V any] struct {
	mu  sync.Mutex
	m   map[K]ttlEntry[V]
	max int
}

type ttlEntry[V any] struct {
	v       V
	expires time.Time
}

func newTTLCache[K comparable, V any](max int) *ttlCache[K, V] {
	return &ttlCache[K, V]{m: make(map[K]ttlEntry[V]), max: max}
}

func (c *ttlCache[K, V]) get(k K, now time.Time) (V, bool) {
	c.mu.Lock()
	e, ok := c.m[k]
	c.mu.Unlock()
	if !ok || !now.Before(e.expires) {
		var zero V
		return zero, false
	}
	return e.v, true
}

func (c *ttlCache[K, V]) put(k K, v V, ttl time.Duration, now time.Time) {
	if ttl <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[k]; !ok && len(c.m) >= c.max {
		for ek, e := range c.m {
			if !now.Before(e.expires) {
				delete(c.m, ek)
			}
		}
		if len(c.m) >= c.max {
			for ek := range c.m {
				delete(c.m, ek)
				break
			}
		}
	}
	c.m[k] = ttlEntry[V]{v: v, expires: now.Add(ttl)}
}

func (c *ttlCache[K, V]) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
