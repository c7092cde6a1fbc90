package controllers

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/wasm-operator/wasm-operator/internal/store"
	"github.com/wasm-operator/wasm-operator/runtime"
)

// fetchCache remembers what each source resolved to, so plugins sharing a source cause one fetch per
// refresh interval, and concurrent reconciles of them wait for the one fetch in flight.
type fetchCache struct {
	mu      sync.Mutex
	entries map[string]*fetchEntry
}

type fetchEntry struct {
	done    chan struct{}
	res     resolved
	err     error
	fetched time.Time
}

func (c *fetchCache) do(key string, now time.Time, interval time.Duration, fetch func() (resolved, error)) (resolved, error) {
	c.mu.Lock()
	if c.entries == nil {
		c.entries = map[string]*fetchEntry{}
	}
	e, ok := c.entries[key]
	if ok {
		c.mu.Unlock()
		<-e.done
		if e.err == nil && (interval == 0 || now.Sub(e.fetched) < interval) {
			return e.res, nil
		}
		c.mu.Lock()
		if c.entries[key] == e {
			delete(c.entries, key)
		}
		if e2, ok := c.entries[key]; ok {
			// Another reconcile started a fresh fetch meanwhile: share it.
			c.mu.Unlock()
			<-e2.done
			return e2.res, e2.err
		}
	}
	e = &fetchEntry{done: make(chan struct{}), fetched: now}
	c.entries[key] = e
	c.mu.Unlock()
	e.res, e.err = fetch()
	close(e.done)
	return e.res, e.err
}

func (c *fetchCache) forget(key string) {
	c.mu.Lock()
	delete(c.entries, key)
	c.mu.Unlock()
}

// dueIn says how long until key needs fetching again (0: never).
func (c *fetchCache) dueIn(key string, now time.Time, interval time.Duration) time.Duration {
	if interval == 0 {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[key]; ok {
		if left := e.fetched.Add(interval).Sub(now); left > 0 {
			return left
		}
	}
	return time.Second
}

// prune forgets completed fetches made before cutoff, such as those keyed by a Secret version that was
// replaced since; a source still in use is fetched again on its next reconcile.
func (c *fetchCache) prune(cutoff time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, e := range c.entries {
		select {
		case <-e.done:
			if e.fetched.Before(cutoff) {
				delete(c.entries, k)
			}
		default:
		}
	}
}

// cached returns what key last resolved to, when a fetch of it completed without error.
func (c *fetchCache) cached(key string) (resolved, bool) {
	c.mu.Lock()
	e, ok := c.entries[key]
	c.mu.Unlock()
	if !ok {
		return resolved{}, false
	}
	select {
	case <-e.done:
		return e.res, e.err == nil
	default:
		return resolved{}, false
	}
}

// moduleCache keeps one compiled module per digest, so validating many plugins of one module compiles it
// once. Different digests compile at once (the engine bounds how many); plugins of a digest being compiled
// wait for that one compilation.
type moduleCache struct {
	mu      sync.Mutex
	modules map[string]*moduleEntry
}

type moduleEntry struct {
	done chan struct{}
	mod  *runtime.Module
	err  error
}

func (c *moduleCache) get(ctx context.Context, digest string, eng *runtime.Engine, st *store.Store) (*runtime.Module, error) {
	c.mu.Lock()
	if c.modules == nil {
		c.modules = map[string]*moduleEntry{}
	}
	e, ok := c.modules[digest]
	if !ok {
		e = &moduleEntry{done: make(chan struct{})}
		c.modules[digest] = e
	}
	c.mu.Unlock()
	if ok {
		select {
		case <-e.done:
			return e.mod, e.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	e.mod, e.err = compileStored(ctx, digest, eng, st)
	close(e.done)
	if e.err != nil {
		// Not kept: the next reconcile tries again (the module may be stored again, or the cause pass).
		c.mu.Lock()
		delete(c.modules, digest)
		c.mu.Unlock()
	}
	return e.mod, e.err
}

func compileStored(ctx context.Context, digest string, eng *runtime.Engine, st *store.Store) (*runtime.Module, error) {
	data, err := st.Get(digest)
	if err != nil {
		return nil, fmt.Errorf("read module %s: %w", digest, err)
	}
	m, err := eng.Compile(ctx, data)
	if err != nil {
		return nil, fmt.Errorf("compile: %w", err)
	}
	return m, nil
}

// release closes the modules whose digest keep does not hold.
func (c *moduleCache) release(ctx context.Context, keep map[string]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for d, e := range c.modules {
		select {
		case <-e.done:
		default:
			continue // still compiling
		}
		if !keep[d] && e.mod != nil {
			_ = e.mod.Close(ctx)
			delete(c.modules, d)
		}
	}
}
