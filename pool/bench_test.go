package pool

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"
)

// The benchmarks measure Pool against two other designs of the same Get/Put contract (slot limit,
// idle reuse, waiting with a context and a timeout), reduced to what the hot path needs, and
// against sync.Pool as a floor that offers none of it.

type item struct{ n int }

func newItem(context.Context) (*item, error) { return &item{}, nil }

// chanPool keeps idle values in a buffered channel and slots in another: no mutex, but FIFO
// reuse (the coldest instance first) and no way to find expired ones without draining it.
type chanPool struct {
	sem  chan struct{}
	idle chan *item
}

func newChanPool(limit, maxIdle int) *chanPool {
	return &chanPool{sem: make(chan struct{}, limit), idle: make(chan *item, maxIdle)}
}

func (p *chanPool) Get(ctx context.Context, timeout time.Duration) (*item, error) {
	select {
	case p.sem <- struct{}{}:
	default:
		t := time.NewTimer(timeout)
		defer t.Stop()
		select {
		case p.sem <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-t.C:
			return nil, ErrSaturated
		}
	}
	select {
	case v := <-p.idle:
		return v, nil
	default:
		return newItem(ctx)
	}
}

func (p *chanPool) Put(v *item) {
	select {
	case p.idle <- v:
	default:
	}
	<-p.sem
}

// listPool is a mutex, an idle stack and a FIFO queue of waiters, each with its own channel;
// Put hands a value straight to the first waiter (the database/sql design).
type listPool struct {
	mu      sync.Mutex
	limit   int
	busy    int
	idle    []*item
	maxIdle int
	waiters []chan *item
}

func newListPool(limit, maxIdle int) *listPool {
	return &listPool{limit: limit, maxIdle: maxIdle, idle: make([]*item, 0, maxIdle)}
}

func (p *listPool) Get(ctx context.Context, timeout time.Duration) (*item, error) {
	p.mu.Lock()
	if p.busy < p.limit {
		p.busy++
		if n := len(p.idle); n > 0 {
			v := p.idle[n-1]
			p.idle = p.idle[:n-1]
			p.mu.Unlock()
			return v, nil
		}
		p.mu.Unlock()
		return newItem(ctx)
	}
	w := make(chan *item, 1)
	p.waiters = append(p.waiters, w)
	p.mu.Unlock()
	t := time.NewTimer(timeout)
	defer t.Stop()
	var err error
	select {
	case v := <-w:
		return v, nil
	case <-ctx.Done():
		err = ctx.Err()
	case <-t.C:
		err = ErrSaturated
	}
	p.mu.Lock()
	for i, x := range p.waiters {
		if x == w {
			p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
			p.mu.Unlock()
			return nil, err
		}
	}
	p.mu.Unlock()
	// A Put handed a value over as the wait ended: keep it.
	return <-w, nil
}

func (p *listPool) Put(v *item) {
	p.mu.Lock()
	if len(p.waiters) > 0 {
		w := p.waiters[0]
		p.waiters = p.waiters[1:]
		p.mu.Unlock()
		w <- v
		return
	}
	p.busy--
	if len(p.idle) < p.maxIdle {
		p.idle = append(p.idle, v)
	}
	p.mu.Unlock()
}

type getPutter interface {
	Get(context.Context, time.Duration) (*item, error)
	Put(*item)
}

// poolAdapter gives Pool the benchmarks' interface.
type poolAdapter struct{ p *Pool[*item] }

func (a poolAdapter) Get(ctx context.Context, _ time.Duration) (*item, error) {
	in, err := a.p.Get(ctx)
	if err != nil {
		return nil, err
	}
	return in.Value(), nil
}

func benchPool(b *testing.B, limit int) *Pool[*item] {
	p, err := New(context.Background(), Options[*item]{
		New: newItem, MaxConcurrency: limit, MaxIdle: limit, AcquireTimeout: time.Hour,
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(p.Close)
	return p
}

func BenchmarkGetPut(b *testing.B) {
	ctx := context.Background()
	b.Run("Pool", func(b *testing.B) {
		p := benchPool(b, DefaultMaxConcurrency)
		b.ReportAllocs()
		for b.Loop() {
			in, err := p.Get(ctx)
			if err != nil {
				b.Fatal(err)
			}
			p.Put(in)
		}
	})
	for _, peer := range []struct {
		name string
		p    getPutter
	}{
		{"chanPool", newChanPool(DefaultMaxConcurrency, DefaultMaxConcurrency)},
		{"listPool", newListPool(DefaultMaxConcurrency, DefaultMaxConcurrency)},
	} {
		b.Run(peer.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				v, err := peer.p.Get(ctx, time.Hour)
				if err != nil {
					b.Fatal(err)
				}
				peer.p.Put(v)
			}
		})
	}
	b.Run("sync.Pool", func(b *testing.B) {
		p := sync.Pool{New: func() any { return &item{} }}
		b.ReportAllocs()
		for b.Loop() {
			p.Put(p.Get())
		}
	})
}

// BenchmarkParallel runs 4×GOMAXPROCS goroutines doing Get+Put against a limit equal to their
// number ("at-limit": every Get finds a slot) and to a quarter of it ("4x-limit": most Gets wait).
func BenchmarkParallel(b *testing.B) {
	const parallelism = 4
	goroutines := parallelism * runtime.GOMAXPROCS(0)
	for _, load := range []struct {
		name  string
		limit int
	}{
		{"at-limit", goroutines},
		{"4x-limit", goroutines / 4},
	} {
		peers := []struct {
			name string
			p    getPutter
		}{
			{"Pool", nil},
			{"chanPool", newChanPool(load.limit, load.limit)},
			{"listPool", newListPool(load.limit, load.limit)},
		}
		for _, peer := range peers {
			b.Run(load.name+"/"+peer.name, func(b *testing.B) {
				ctx := context.Background()
				var pool *Pool[*item]
				if peer.p == nil {
					pool = benchPool(b, load.limit)
				}
				b.ReportAllocs()
				b.SetParallelism(parallelism)
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if pool != nil {
							in, err := pool.Get(ctx)
							if err != nil {
								b.Error(err)
								return
							}
							pool.Put(in)
							continue
						}
						v, err := peer.p.Get(ctx, time.Hour)
						if err != nil {
							b.Error(err)
							return
						}
						peer.p.Put(v)
					}
				})
			})
		}
	}
}
