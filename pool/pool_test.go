package pool

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fake is a pooled value that records how it is used.
type fake struct {
	id       int
	inUse    atomic.Int32
	closes   atomic.Int32
	closedAt atomic.Int64 // UnixNano
}

// factory makes fakes, fails on demand, and checks that every fake is closed exactly once.
type factory struct {
	mu      sync.Mutex
	made    []*fake
	fail    func() error // nil: never fail
	calls   int
	closing atomic.Int64
}

func (f *factory) new(ctx context.Context) (*fake, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.fail != nil {
		if err := f.fail(); err != nil {
			return nil, err
		}
	}
	v := &fake{id: len(f.made) + 1}
	f.made = append(f.made, v)
	return v, nil
}

func (f *factory) close(v *fake) {
	v.closedAt.Store(time.Now().UnixNano())
	v.closes.Add(1)
	f.closing.Add(1)
}

func (f *factory) options() Options[*fake] {
	return Options[*fake]{New: f.new, Close: f.close}
}

func (f *factory) madeCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.made)
}

// closedCount is how many distinct fakes were closed.
func (f *factory) closedCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, v := range f.made {
		if v.closes.Load() > 0 {
			n++
		}
	}
	return n
}

// checkAllClosedOnce fails the test unless every fake made was closed exactly once.
func (f *factory) checkAllClosedOnce(t *testing.T) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, v := range f.made {
		if n := v.closes.Load(); n != 1 {
			t.Errorf("instance %d closed %d times, want 1", v.id, n)
		}
	}
}

func newPool(t *testing.T, opts Options[*fake]) *Pool[*fake] {
	t.Helper()
	p, err := New(context.Background(), opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(p.Close)
	return p
}

func mustGet(t *testing.T, p *Pool[*fake]) *Instance[*fake] {
	t.Helper()
	in, err := p.Get(context.Background())
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	return in
}

// eventually waits until cond holds, failing the test after a generous deadline.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func waitingIs(p *Pool[*fake], n int) func() bool {
	return func() bool { return p.Stats().Waiting == n }
}

func TestNewRejectsBadOptions(t *testing.T) {
	f := &factory{}
	tests := []struct {
		name string
		edit func(*Options[*fake])
	}{
		{"no New", func(o *Options[*fake]) { o.New = nil }},
		{"negative MaxConcurrency", func(o *Options[*fake]) { o.MaxConcurrency = -1 }},
		{"negative Prewarm", func(o *Options[*fake]) { o.Prewarm = -1 }},
		{"Prewarm above MaxIdle", func(o *Options[*fake]) { o.MaxIdle = 2; o.Prewarm = 3 }},
		{"Prewarm above MaxConcurrency", func(o *Options[*fake]) { o.MaxConcurrency = 2; o.MaxIdle = 4; o.Prewarm = 3 }},
		{"Prewarm with no idle", func(o *Options[*fake]) { o.MaxIdle = -1; o.Prewarm = 1 }},
		{"negative MaxUses", func(o *Options[*fake]) { o.MaxUses = -1 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := f.options()
			tt.edit(&opts)
			if p, err := New(context.Background(), opts); err == nil {
				p.Close()
				t.Fatal("New accepted bad options")
			}
		})
	}
	if n := f.madeCount(); n != 0 {
		t.Errorf("New created %d instances for bad options", n)
	}
}

func TestDefaults(t *testing.T) {
	p := newPool(t, (&factory{}).options())
	if p.maxIdle != 8 || p.maxConcurrency != 10 || p.acquireTimeout != 5*time.Second ||
		p.idleTTL != time.Minute || p.prewarm != 0 || p.maxUses != 0 {
		t.Errorf("defaults: maxIdle %d, maxConcurrency %d, acquireTimeout %v, idleTTL %v, prewarm %d, maxUses %d",
			p.maxIdle, p.maxConcurrency, p.acquireTimeout, p.idleTTL, p.prewarm, p.maxUses)
	}
}

func TestGetPutReuses(t *testing.T) {
	f := &factory{}
	p := newPool(t, f.options())
	first := mustGet(t, p)
	p.Put(first)
	second := mustGet(t, p)
	if first != second || first.Value() != second.Value() {
		t.Errorf("second Get returned instance %d, want the returned instance %d", second.Value().id, first.Value().id)
	}
	p.Put(second)
	want := Stats{Idle: 1, Created: 1, Hits: 1, Misses: 1}
	if s := p.Stats(); s != want {
		t.Errorf("Stats() = %+v, want %+v", s, want)
	}
}

func TestPutBeyondMaxIdleCloses(t *testing.T) {
	tests := []struct {
		maxIdle, wantIdle int
	}{
		{-1, 0},
		{1, 1},
		{3, 3},
		{5, 5},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint("MaxIdle=", tt.maxIdle), func(t *testing.T) {
			f := &factory{}
			opts := f.options()
			opts.MaxIdle = tt.maxIdle
			opts.MaxConcurrency = 5
			p := newPool(t, opts)
			var ins []*Instance[*fake]
			for range 5 {
				ins = append(ins, mustGet(t, p))
			}
			for _, in := range ins {
				p.Put(in)
			}
			s := p.Stats()
			if s.Idle != tt.wantIdle || s.Destroyed != uint64(5-tt.wantIdle) || f.closedCount() != 5-tt.wantIdle {
				t.Errorf("after 5 Puts: idle %d, destroyed %d, closed %d; want idle %d, %d closed",
					s.Idle, s.Destroyed, f.closedCount(), tt.wantIdle, 5-tt.wantIdle)
			}
		})
	}
}

func TestIdleTTLClosesExpired(t *testing.T) {
	const ttl = 30 * time.Millisecond
	f := &factory{}
	opts := f.options()
	opts.IdleTTL = ttl
	p := newPool(t, opts)
	a, b := mustGet(t, p), mustGet(t, p)
	p.Put(a)
	returned := time.Now()
	p.Put(b)

	eventually(t, "idle instances to expire", func() bool { return p.Stats().Idle == 0 })
	for _, in := range []*Instance[*fake]{a, b} {
		if idle := time.Unix(0, in.Value().closedAt.Load()).Sub(returned); idle < ttl {
			t.Errorf("instance %d closed after %v idle, before the TTL %v", in.Value().id, idle, ttl)
		}
	}
	if s := p.Stats(); s.Destroyed != 2 || f.closedCount() != 2 {
		t.Errorf("destroyed %d, closed %d; want 2", s.Destroyed, f.closedCount())
	}
	// The pool still works after expiry and creates a fresh instance.
	if in := mustGet(t, p); in == a || in == b {
		t.Error("Get returned an expired instance")
	} else {
		p.Put(in)
	}
}

func TestCloseClosesAllIncludingReturnedLater(t *testing.T) {
	f := &factory{}
	p := newPool(t, f.options())
	a, b, c := mustGet(t, p), mustGet(t, p), mustGet(t, p)
	p.Put(a)
	p.Close()
	if a.Value().closes.Load() != 1 {
		t.Error("Close left the idle instance open")
	}
	if b.Value().closes.Load() != 0 {
		t.Error("Close closed a checked-out instance under its user")
	}
	p.Put(b)
	p.Discard(c)
	p.Close() // idempotent
	f.checkAllClosedOnce(t)
	if _, err := p.Get(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Get after Close: %v, want ErrClosed", err)
	}
	want := Stats{Created: 3, Destroyed: 3, Misses: 3}
	if s := p.Stats(); s != want {
		t.Errorf("Stats() = %+v, want %+v", s, want)
	}
}

func TestSaturatedAfterAcquireTimeout(t *testing.T) {
	const timeout = 50 * time.Millisecond
	f := &factory{}
	opts := f.options()
	opts.MaxConcurrency = 2
	opts.AcquireTimeout = timeout
	p := newPool(t, opts)
	a, b := mustGet(t, p), mustGet(t, p)

	start := time.Now()
	_, err := p.Get(context.Background())
	waited := time.Since(start)
	if !errors.Is(err, ErrSaturated) {
		t.Fatalf("Get beyond the limit: %v, want ErrSaturated", err)
	}
	// The machine running the tests may be busy; allow generous slack above, none below.
	if waited < timeout || waited > timeout+250*time.Millisecond {
		t.Errorf("Get gave up after %v, want just over %v", waited, timeout)
	}
	if s := p.Stats(); s.Timeouts != 1 || s.Busy != 2 || s.Waiting != 0 || s.Created != 2 {
		t.Errorf("Stats() = %+v, want 1 timeout, 2 busy, none waiting, 2 created", s)
	}
	p.Put(a)
	p.Put(b)
}

func TestWaitersProceedAsSlotsFree(t *testing.T) {
	const limit, waiters = 2, 6
	f := &factory{}
	opts := f.options()
	opts.MaxConcurrency = limit
	opts.AcquireTimeout = -1 // wait as long as the context allows
	p := newPool(t, opts)
	held := []*Instance[*fake]{mustGet(t, p), mustGet(t, p)}

	got := make(chan *Instance[*fake])
	errs := make(chan error, waiters)
	for range waiters {
		go func() {
			in, err := p.Get(context.Background())
			if err != nil {
				errs <- err
				return
			}
			got <- in
		}()
	}
	eventually(t, "all waiters to block", waitingIs(p, waiters))

	// Each returned instance lets exactly one waiter through, and it gets the same instance.
	for i := range waiters {
		p.Put(held[0])
		held = held[1:]
		select {
		case in := <-got:
			held = append(held, in)
		case err := <-errs:
			t.Fatalf("waiter %d: %v", i, err)
		}
		if s := p.Stats(); s.Busy != limit || s.Waiting != waiters-1-i {
			t.Fatalf("after %d Puts: busy %d, waiting %d", i+1, s.Busy, s.Waiting)
		}
	}
	for _, in := range held {
		p.Put(in)
	}
	if s := p.Stats(); s.Created != limit || s.Hits != waiters {
		t.Errorf("Stats() = %+v, want %d created and %d hits", s, limit, waiters)
	}
}

func TestContextEndsWhileWaiting(t *testing.T) {
	tests := []struct {
		name    string
		makeCtx func() (context.Context, context.CancelFunc)
		cancel  bool
		want    error
	}{
		{"cancel", func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) },
			true, context.Canceled},
		{"deadline before acquire timeout", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 20*time.Millisecond)
		}, false, context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &factory{}
			opts := f.options()
			opts.MaxConcurrency = 1
			p := newPool(t, opts)
			held := mustGet(t, p)
			ctx, cancel := tt.makeCtx()
			defer cancel()
			errc := make(chan error, 1)
			go func() {
				_, err := p.Get(ctx)
				errc <- err
			}()
			eventually(t, "Get to wait", waitingIs(p, 1))
			if tt.cancel {
				cancel()
			}
			if err := <-errc; !errors.Is(err, tt.want) {
				t.Errorf("Get: %v, want %v", err, tt.want)
			}
			if s := p.Stats(); s.Waiting != 0 || s.Timeouts != 0 || s.Busy != 1 {
				t.Errorf("Stats() = %+v, want nothing waiting, no timeout, 1 busy", s)
			}
			p.Put(held)
			if _, err := p.Get(ctx); !errors.Is(err, tt.want) {
				t.Errorf("Get with an ended context and a free slot: %v, want %v", err, tt.want)
			}
		})
	}
}

func TestDiscardFreesSlot(t *testing.T) {
	f := &factory{}
	opts := f.options()
	opts.MaxConcurrency = 1
	opts.AcquireTimeout = 10 * time.Millisecond
	p := newPool(t, opts)
	broken := mustGet(t, p)
	p.Discard(broken)
	if broken.Value().closes.Load() != 1 {
		t.Error("Discard did not close the instance")
	}
	in, err := p.Get(context.Background())
	if err != nil {
		t.Fatalf("Get after Discard: %v", err)
	}
	if in == broken {
		t.Error("Get returned the discarded instance")
	}
	p.Put(in)
	if s := p.Stats(); s.Idle != 1 || s.Busy != 0 || s.Created != 2 || s.Destroyed != 1 {
		t.Errorf("Stats() = %+v, want 1 idle, 2 created, 1 destroyed", s)
	}
}

func TestMisusePanics(t *testing.T) {
	f := &factory{}
	p := newPool(t, f.options())
	other := newPool(t, f.options())
	in := mustGet(t, p)
	p.Put(in)
	foreign := mustGet(t, other)
	defer other.Put(foreign)
	tests := []struct {
		name string
		do   func()
	}{
		{"Put twice", func() { p.Put(in) }},
		{"Discard after Put", func() { p.Discard(in) }},
		{"Put to another pool", func() { p.Put(foreign) }},
		{"Put nil", func() { p.Put(nil) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("no panic")
				}
			}()
			tt.do()
		})
	}
	// The pool is still usable after the caught misuse.
	p.Put(mustGet(t, p))
}

func TestDrainWaitsForInFlight(t *testing.T) {
	f := &factory{}
	opts := f.options()
	opts.MaxConcurrency = 2
	opts.AcquireTimeout = -1
	p := newPool(t, opts)
	a, b := mustGet(t, p), mustGet(t, p)

	waiter := make(chan error, 1)
	go func() {
		_, err := p.Get(context.Background())
		waiter <- err
	}()
	eventually(t, "Get to wait", waitingIs(p, 1))

	drained := make(chan error, 1)
	go func() { drained <- p.Drain(context.Background()) }()

	if err := <-waiter; !errors.Is(err, ErrClosed) {
		t.Errorf("waiting Get during Drain: %v, want ErrClosed", err)
	}
	p.Put(a)
	if a.Value().closes.Load() != 1 {
		t.Error("instance returned during Drain was not closed")
	}
	select {
	case err := <-drained:
		t.Fatalf("Drain returned (%v) while an instance was still checked out", err)
	default:
	}
	if b.Value().closes.Load() != 0 {
		t.Error("Drain closed an instance still in use")
	}
	p.Discard(b)
	if err := <-drained; err != nil {
		t.Errorf("Drain: %v", err)
	}
	f.checkAllClosedOnce(t)
	if err := p.Drain(context.Background()); err != nil {
		t.Errorf("second Drain: %v", err)
	}
}

func TestDrainGivesUpWhenContextEnds(t *testing.T) {
	f := &factory{}
	p := newPool(t, f.options())
	in, idle := mustGet(t, p), mustGet(t, p)
	p.Put(idle)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := p.Drain(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Drain with an instance never returned: %v, want DeadlineExceeded", err)
	}
	if idle.Value().closes.Load() != 1 || in.Value().closes.Load() != 0 {
		t.Error("Drain must close the idle instance and leave the checked-out one to its user")
	}
	p.Put(in)
	f.checkAllClosedOnce(t)
	if s := p.Stats(); s.Busy != 0 || s.Created != s.Destroyed {
		t.Errorf("Stats() = %+v, want nothing busy and all destroyed", s)
	}
}

func TestPrewarmKeepsIdleReady(t *testing.T) {
	const prewarm = 3
	f := &factory{}
	opts := f.options()
	opts.Prewarm = prewarm
	opts.MaxConcurrency = 5
	opts.IdleTTL = 10 * time.Millisecond
	p := newPool(t, opts)
	if s := p.Stats(); s.Idle != prewarm || s.Created != prewarm {
		t.Fatalf("after New: %+v, want %d idle", s, prewarm)
	}
	a, b := mustGet(t, p), mustGet(t, p)
	eventually(t, "prewarm to refill", func() bool { return p.Stats().Idle == prewarm })
	if s := p.Stats(); s.Hits != 2 || s.Misses != 0 || s.Created != prewarm+2 {
		t.Errorf("Stats() = %+v, want 2 hits from prewarmed instances and 2 refills", s)
	}
	// Only MaxConcurrency instances may exist for refills: with 5 checked out none is made.
	c, d, e := mustGet(t, p), mustGet(t, p), mustGet(t, p)
	p.Put(a)
	p.Put(b)
	p.Put(c)
	p.Put(d)
	p.Put(e)
	// Instances above the prewarm count expire; the prewarmed ones stay.
	eventually(t, "surplus idle instances to expire", func() bool { return p.Stats().Idle == prewarm })
	time.Sleep(3 * opts.IdleTTL) // let several cleanup rounds pass: none may go below Prewarm
	if s := p.Stats(); s.Idle != prewarm {
		t.Errorf("idle %d after expiry rounds, want %d", s.Idle, prewarm)
	}
}

func TestPrewarmFailureFailsNew(t *testing.T) {
	boom := errors.New("boom")
	n := 0
	f := &factory{fail: func() error {
		if n++; n == 3 {
			return boom
		}
		return nil
	}}
	opts := f.options()
	opts.Prewarm = 4
	if _, err := New(context.Background(), opts); !errors.Is(err, boom) {
		t.Fatalf("New: %v, want %v", err, boom)
	}
	f.checkAllClosedOnce(t)
	if f.madeCount() != 2 {
		t.Errorf("made %d, want 2", f.madeCount())
	}
}

func TestMaxUsesRecycles(t *testing.T) {
	for _, maxUses := range []int{1, 2, 5} {
		t.Run(fmt.Sprint("MaxUses=", maxUses), func(t *testing.T) {
			f := &factory{}
			opts := f.options()
			opts.MaxUses = maxUses
			p := newPool(t, opts)
			first := mustGet(t, p)
			p.Put(first)
			for i := 1; i < maxUses; i++ {
				in := mustGet(t, p)
				if in != first {
					t.Fatalf("use %d: got a new instance before MaxUses", i+1)
				}
				p.Put(in)
			}
			if first.Value().closes.Load() != 1 {
				t.Errorf("instance not closed after %d uses", maxUses)
			}
			in := mustGet(t, p)
			if in == first {
				t.Fatal("instance handed out beyond MaxUses")
			}
			p.Put(in)
			wantDestroyed := uint64(1)
			if maxUses == 1 {
				wantDestroyed = 2
			}
			if s := p.Stats(); s.Created != 2 || s.Destroyed != wantDestroyed {
				t.Errorf("Stats() = %+v, want 2 created, %d destroyed", s, wantDestroyed)
			}
		})
	}
}

func TestFactoryErrorReleasesSlot(t *testing.T) {
	boom := errors.New("boom")
	var fail atomic.Bool
	fail.Store(true)
	f := &factory{fail: func() error {
		if fail.Load() {
			return boom
		}
		return nil
	}}
	opts := f.options()
	opts.MaxConcurrency = 1
	opts.AcquireTimeout = 10 * time.Millisecond
	p := newPool(t, opts)
	for range 3 {
		if _, err := p.Get(context.Background()); !errors.Is(err, boom) {
			t.Fatalf("Get with a failing factory: %v, want %v", err, boom)
		}
	}
	fail.Store(false)
	in, err := p.Get(context.Background())
	if err != nil {
		t.Fatalf("Get after factory errors: %v", err)
	}
	p.Put(in)
	if s := p.Stats(); s.Misses != 4 || s.Created != 1 || s.Timeouts != 0 || s.Busy != 0 {
		t.Errorf("Stats() = %+v, want 4 misses, 1 created, no timeouts", s)
	}
}

// TestHammer runs many goroutines against one pool with random cancellations, failures,
// discards and a drain, and checks that nothing deadlocks, leaks or is used twice at once, and
// that Stats add up.
func TestHammer(t *testing.T) {
	const (
		goroutines = 64
		iterations = 200
		limit      = 8
	)
	type getKey struct{}
	for round := range 3 {
		t.Run(fmt.Sprint("round", round), func(t *testing.T) {
			var getCalls atomic.Uint64
			f := &factory{}
			newFn := func(ctx context.Context) (*fake, error) {
				if ctx.Value(getKey{}) != nil {
					getCalls.Add(1)
				}
				return f.new(ctx)
			}
			p, err := New(context.Background(), Options[*fake]{
				New: newFn, Close: f.close,
				MaxIdle: 4, MaxConcurrency: limit, Prewarm: 2, MaxUses: 7,
				AcquireTimeout: time.Duration(1+rand.IntN(3)) * time.Millisecond,
				IdleTTL:        3 * time.Millisecond,
			})
			if err != nil {
				t.Fatal(err)
			}
			f.mu.Lock()
			f.fail = func() error { // from now on one in twenty New calls fails
				if rand.IntN(20) == 0 {
					return errors.New("boom")
				}
				return nil
			}
			f.mu.Unlock()

			var ok, saturated, closedErrs atomic.Uint64
			var inUse, maxInUse atomic.Int64
			drainAt := rand.IntN(goroutines * iterations)
			var step atomic.Int64
			stop := make(chan struct{})
			sampled := make(chan struct{})
			go func() { // Stats must add up at any moment.
				defer close(sampled)
				for {
					select {
					case <-stop:
						return
					default:
					}
					s := p.Stats()
					if s.Created-s.Destroyed != uint64(s.Idle+s.Busy) || s.Busy > limit || s.Waiting > goroutines {
						t.Errorf("inconsistent Stats: %+v", s)
						return
					}
				}
			}()

			var wg sync.WaitGroup
			for range goroutines {
				wg.Go(func() {
					for range iterations {
						if step.Add(1) == int64(drainAt) {
							ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rand.IntN(5))*time.Millisecond)
							_ = p.Drain(ctx)
							cancel()
						}
						ctx, cancel := context.WithCancel(context.WithValue(context.Background(), getKey{}, true))
						if rand.IntN(8) == 0 {
							time.AfterFunc(time.Duration(rand.IntN(200))*time.Microsecond, cancel)
						}
						in, err := p.Get(ctx)
						switch {
						case err == nil:
							ok.Add(1)
						case errors.Is(err, ErrSaturated):
							saturated.Add(1)
						case errors.Is(err, ErrClosed):
							closedErrs.Add(1)
						}
						if err != nil {
							cancel()
							continue
						}
						v := in.Value()
						if !v.inUse.CompareAndSwap(0, 1) {
							t.Errorf("instance %d handed out twice", v.id)
						}
						if v.closes.Load() != 0 {
							t.Errorf("closed instance %d handed out", v.id)
						}
						if n := inUse.Add(1); n > maxInUse.Load() {
							maxInUse.Store(n)
						}
						for range rand.IntN(100) {
							_ = v.id
						}
						inUse.Add(-1)
						v.inUse.Store(0)
						if rand.IntN(10) == 0 {
							p.Discard(in)
						} else {
							p.Put(in)
						}
						cancel()
					}
				})
			}
			wg.Wait()
			close(stop)
			<-sampled
			p.Close()

			f.checkAllClosedOnce(t)
			s := p.Stats()
			made := uint64(f.madeCount())
			if s.Idle != 0 || s.Busy != 0 || s.Waiting != 0 || s.Created != made || s.Destroyed != made ||
				uint64(f.closing.Load()) != made {
				t.Errorf("after Close: %+v; made %d, closed %d", s, made, f.closing.Load())
			}
			if s.Misses != getCalls.Load() || s.Timeouts != saturated.Load() || ok.Load() < s.Hits ||
				ok.Load() > s.Hits+s.Misses {
				t.Errorf("counters: %+v; Get calls to New %d, ok %d, saturated %d",
					s, getCalls.Load(), ok.Load(), saturated.Load())
			}
			if maxInUse.Load() > limit {
				t.Errorf("%d instances in use at once, limit %d", maxInUse.Load(), limit)
			}
			t.Logf("ok %d, saturated %d, closed %d, %+v", ok.Load(), saturated.Load(), closedErrs.Load(), s)
		})
	}
}
