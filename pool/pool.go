package pool

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Defaults applied by New to zero-valued Options fields.
const (
	DefaultMaxIdle        = 8
	DefaultMaxConcurrency = 10
	DefaultAcquireTimeout = 5 * time.Second
	DefaultIdleTTL        = time.Minute
)

var (
	// ErrSaturated is returned by Get when every slot stayed busy for the whole acquire timeout.
	// Callers serving requests answer it with 429 and a Retry-After header.
	ErrSaturated = errors.New("pool: saturated: no instance became free within the acquire timeout")

	// ErrClosed is returned by Get once Drain or Close has been called.
	ErrClosed = errors.New("pool: closed")
)

// Options configure a Pool. Zero values mean the documented default.
type Options[T any] struct {
	// New creates an instance. It is called by Get (with Get's context) when no idle instance is
	// available, and in the background (with a context cancelled by Close) to keep Prewarm instances
	// ready. Required.
	New func(ctx context.Context) (T, error)

	// Close releases an instance. It is called exactly once for every instance New created: when it
	// is discarded, recycled, expired, surplus to MaxIdle, or when the pool is closed. Calls happen
	// outside the pool's lock and may run concurrently. Optional.
	Close func(T)

	// MaxIdle is how many unused instances the pool keeps; an instance returned to a pool that
	// already holds MaxIdle idle ones is closed. Default 8; a negative value keeps none.
	MaxIdle int

	// MaxConcurrency is how many instances may be checked out (or being created for a Get) at once.
	// Default 10; must not be negative.
	MaxConcurrency int

	// AcquireTimeout bounds how long Get waits for a free slot before it returns ErrSaturated.
	// Default 5s; a negative value waits as long as Get's context allows.
	AcquireTimeout time.Duration

	// IdleTTL is how long an instance may stay idle before it is closed. A cleanup loop runs every
	// IdleTTL/3, so an instance is closed after at least IdleTTL idle and, unless the loop is held
	// up (it also creates Prewarm instances), at most 5/3 IdleTTL. Instances kept for Prewarm do not
	// expire. Default 1m; a negative value disables expiry.
	IdleTTL time.Duration

	// Prewarm is how many idle instances the pool keeps ready. New creates them before it returns,
	// and the pool creates replacements in the background as they are taken, as long as fewer than
	// MaxConcurrency instances exist. Default 0; at most MaxIdle and MaxConcurrency.
	Prewarm int

	// MaxUses is how many times an instance is checked out before it is closed instead of being
	// returned to the pool on Put. Default 0, unlimited.
	MaxUses int
}

// Stats is a snapshot of a Pool, taken atomically: Created-Destroyed equals Idle+Busy.
type Stats struct {
	Idle    int // instances ready for Get
	Busy    int // instances checked out and not yet returned
	Waiting int // Get calls waiting for a free slot

	Created   uint64 // instances New returned without error
	Destroyed uint64 // instances passed to Close
	Hits      uint64 // Get calls served by an idle or just-returned instance
	Misses    uint64 // Get calls that called New, successfully or not
	Timeouts  uint64 // Get calls that returned ErrSaturated
}

// Instance is a checked-out value. Give it back with Put or Discard, exactly once.
type Instance[T any] struct {
	value     T
	pool      *Pool[T]
	uses      int
	busy      bool
	idleSince time.Time // while idle: no later than its return, set by a cleanup round
}

// Value returns the pooled value.
func (in *Instance[T]) Value() T { return in.value }

// A waiter is a Get blocked for a slot. Put, Discard and shutdown hand it a slot (with the
// returned instance, or with none, so that it creates one) or an error, under the pool's lock.
// Waiters are kept for reuse, with their channel and timer, so that waiting allocates nothing.
type waiter[T any] struct {
	ready      chan struct{} // receives one signal when handed a slot or an error
	timer      *time.Timer
	in         *Instance[T] // the handed-over instance; nil with a slot means create one
	err        error
	handed     bool
	prev, next *waiter[T]
}

// Pool keeps instances of T for reuse and bounds how many are in use at once.
// All methods are safe for concurrent use.
type Pool[T any] struct {
	newFn   func(context.Context) (T, error)
	closeFn func(T)

	maxIdle        int
	maxConcurrency int
	acquireTimeout time.Duration
	idleTTL        time.Duration
	prewarm        int
	maxUses        int

	// Background work: creating Prewarm instances and expiring idle ones.
	bgCtx    context.Context
	bgCancel context.CancelFunc
	bgKick   chan struct{}
	bgDone   chan struct{}

	mu        sync.Mutex
	closed    bool
	idle      []*Instance[T] // a stack: the most recently used on top, the oldest at index 0
	busy      int            // checked out
	creating  int            // slots held by Gets that are calling New
	waitHead  *waiter[T]     // FIFO of blocked Gets
	waitTail  *waiter[T]
	waiting   int
	spare     sync.Pool     // *waiter[T], kept for reuse
	lowWater  int           // idle[:lowWater] stayed idle since the last cleanup round
	quiesced  chan struct{} // made on shutdown, closed once busy+creating is zero
	quiescent bool

	created, destroyed, hits, misses, timeouts uint64
}

// New returns a pool configured by opts. When opts.Prewarm is positive it creates that many
// instances with ctx before returning, and returns the first error New gave (having closed what it
// created), so a caller learns at once that instances cannot be made.
func New[T any](ctx context.Context, opts Options[T]) (*Pool[T], error) {
	if opts.New == nil {
		return nil, errors.New("pool: options: New is required")
	}
	p := &Pool[T]{
		newFn:          opts.New,
		closeFn:        opts.Close,
		maxIdle:        opts.MaxIdle,
		maxConcurrency: opts.MaxConcurrency,
		acquireTimeout: opts.AcquireTimeout,
		idleTTL:        opts.IdleTTL,
		prewarm:        opts.Prewarm,
		maxUses:        opts.MaxUses,
	}
	if p.closeFn == nil {
		p.closeFn = func(T) {}
	}
	switch {
	case p.maxIdle == 0:
		p.maxIdle = DefaultMaxIdle
	case p.maxIdle < 0:
		p.maxIdle = 0
	}
	switch {
	case p.maxConcurrency == 0:
		p.maxConcurrency = DefaultMaxConcurrency
	case p.maxConcurrency < 0:
		return nil, fmt.Errorf("pool: options: MaxConcurrency %d is negative", p.maxConcurrency)
	}
	if p.acquireTimeout == 0 {
		p.acquireTimeout = DefaultAcquireTimeout
	}
	if p.idleTTL == 0 {
		p.idleTTL = DefaultIdleTTL
	}
	if p.prewarm < 0 || p.prewarm > p.maxIdle || p.prewarm > p.maxConcurrency {
		return nil, fmt.Errorf("pool: options: Prewarm %d must be between 0 and MaxIdle (%d) and MaxConcurrency (%d)",
			p.prewarm, p.maxIdle, p.maxConcurrency)
	}
	if p.maxUses < 0 {
		return nil, fmt.Errorf("pool: options: MaxUses %d is negative", p.maxUses)
	}
	p.idle = make([]*Instance[T], 0, p.maxIdle)

	for range p.prewarm {
		v, err := p.newFn(ctx)
		if err != nil {
			for _, in := range p.idle {
				p.closeFn(in.value)
			}
			return nil, fmt.Errorf("pool: prewarm: %w", err)
		}
		p.idle = append(p.idle, &Instance[T]{value: v, pool: p})
		p.created++
	}

	if p.prewarm > 0 || p.idleTTL > 0 {
		p.bgCtx, p.bgCancel = context.WithCancel(context.Background())
		p.bgKick = make(chan struct{}, 1)
		p.bgDone = make(chan struct{})
		go p.background()
	}
	return p, nil
}

// Get checks out an instance: an idle one if there is one, else a new one from Options.New.
// When MaxConcurrency instances are already checked out it waits, first come first served, for
// one to be returned, until the acquire timeout (ErrSaturated), ctx's end (ctx's error, wrapped),
// or Drain or Close (ErrClosed). An error from Options.New is returned wrapped, and the slot is
// freed.
func (p *Pool[T]) Get(ctx context.Context) (*Instance[T], error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("pool: get: %w", err)
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, ErrClosed
	}
	if p.busy+p.creating >= p.maxConcurrency {
		return p.wait(ctx) // unlocks
	}
	if n := len(p.idle); n > 0 {
		in := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.lowWater = min(p.lowWater, n-1)
		in.busy = true
		p.busy++
		p.hits++
		kick := n-1 < p.prewarm
		p.mu.Unlock()
		if kick {
			p.kick()
		}
		return in, nil
	}
	p.creating++
	p.mu.Unlock()
	return p.create(ctx)
}

// create calls New for a Get that holds a slot counted in p.creating.
func (p *Pool[T]) create(ctx context.Context) (*Instance[T], error) {
	v, err := p.newFn(ctx)

	p.mu.Lock()
	p.misses++
	if err != nil {
		p.creating--
		p.releaseSlotLocked()
		p.mu.Unlock()
		return nil, fmt.Errorf("pool: new instance: %w", err)
	}
	p.created++
	if p.closed {
		p.creating--
		p.destroyed++
		p.settleLocked()
		p.mu.Unlock()
		p.closeFn(v)
		return nil, ErrClosed
	}
	p.creating--
	p.busy++
	p.mu.Unlock()
	return &Instance[T]{value: v, pool: p, busy: true}, nil
}

// wait queues a Get that found every slot taken, with p.mu held, and unlocks it.
func (p *Pool[T]) wait(ctx context.Context) (*Instance[T], error) {
	w, _ := p.spare.Get().(*waiter[T])
	if w == nil {
		w = &waiter[T]{ready: make(chan struct{}, 1)}
	}
	if p.waitTail == nil {
		p.waitHead = w
	} else {
		p.waitTail.next = w
		w.prev = p.waitTail
	}
	p.waitTail = w
	p.waiting++
	p.mu.Unlock()

	var timeout <-chan time.Time
	if p.acquireTimeout > 0 {
		if w.timer == nil {
			w.timer = time.NewTimer(p.acquireTimeout)
		} else {
			w.timer.Reset(p.acquireTimeout)
		}
		timeout = w.timer.C
	}
	var err error
	select {
	case <-w.ready:
	case <-ctx.Done():
		err = fmt.Errorf("pool: wait for instance: %w", ctx.Err())
	case <-timeout:
		err = ErrSaturated
	}
	if w.timer != nil {
		w.timer.Stop()
	}

	if err == nil {
		// Handed over: the fields were written before the signal was sent, and the pool no
		// longer refers to w, so the lock is not needed.
		in, handedErr := w.in, w.err
		p.recycle(w)
		switch {
		case handedErr != nil: // the pool closed
			return nil, handedErr
		case in != nil:
			return in, nil
		}
		return p.create(ctx)
	}

	p.mu.Lock()
	if err == ErrSaturated && w.err == nil { // (not when the pool closed meanwhile)
		p.timeouts++
	}
	if !w.handed { // gave up before anything was handed over
		p.unlinkLocked(w)
		p.mu.Unlock()
		p.recycle(w)
		return nil, err
	}
	<-w.ready // handed over as the wait ended; the signal was sent under the lock
	in, handedErr := w.in, w.err
	p.recycle(w)
	switch {
	case handedErr != nil: // the pool closed; no slot was handed over
		p.mu.Unlock()
		return nil, handedErr
	case in != nil: // an instance was handed over: pass it on
		p.hits-- // counted by handLocked, but this Get fails
		p.unlockAndClose(p.returnLocked(in))
		return nil, err
	}
	p.creating-- // a slot was handed over: pass it on
	p.releaseSlotLocked()
	p.mu.Unlock()
	return nil, err
}

// handLocked gives the first waiter in, or with in nil a slot to create an instance in.
func (p *Pool[T]) handLocked(in *Instance[T]) {
	w := p.waitHead
	p.unlinkLocked(w)
	w.in = in
	w.handed = true
	if in != nil {
		p.hits++
	}
	w.ready <- struct{}{}
}

func (p *Pool[T]) unlinkLocked(w *waiter[T]) {
	if w.prev == nil {
		p.waitHead = w.next
	} else {
		w.prev.next = w.next
	}
	if w.next == nil {
		p.waitTail = w.prev
	} else {
		w.next.prev = w.prev
	}
	w.prev, w.next = nil, nil
	p.waiting--
}

// recycle keeps a waiter that the pool no longer refers to for another wait.
func (p *Pool[T]) recycle(w *waiter[T]) {
	w.in, w.err, w.handed = nil, nil, false
	p.spare.Put(w)
}

// releaseSlotLocked gives a slot freed by a holder (whose count the caller has already lowered)
// to the first waiter, to create an instance in, or else lets a draining pool settle.
func (p *Pool[T]) releaseSlotLocked() {
	if p.waitHead != nil {
		p.creating++
		p.handLocked(nil)
		return
	}
	p.settleLocked()
}

// returnLocked takes back a checked-out instance: it goes to the first waiter, or to the idle
// stack, or is returned to be closed (pool closed, MaxUses reached, MaxIdle idle already).
func (p *Pool[T]) returnLocked(in *Instance[T]) (toClose *Instance[T]) {
	keep := !p.closed && (p.maxUses == 0 || in.uses < p.maxUses)
	if keep && p.waitHead != nil { // it stays busy, in its next user's hands
		p.handLocked(in)
		return nil
	}
	in.busy = false
	p.busy--
	if keep && len(p.idle) < p.maxIdle {
		p.idle = append(p.idle, in)
		return nil
	}
	p.destroyed++
	p.releaseSlotLocked()
	return in
}

// unlockAndClose unlocks p.mu, closes in unless it is nil, and asks for a Prewarm refill if one is
// due.
func (p *Pool[T]) unlockAndClose(in *Instance[T]) {
	kick := in != nil && !p.closed && len(p.idle) < p.prewarm
	p.mu.Unlock()
	if in != nil {
		p.closeFn(in.value)
	}
	if kick {
		p.kick()
	}
}

// Put returns an instance checked out by Get. The pool keeps it for reuse unless the pool is
// closed, already holds MaxIdle idle instances, or the instance has been checked out MaxUses
// times; then the instance is closed. Put panics if in is not checked out from p.
func (p *Pool[T]) Put(in *Instance[T]) {
	p.mu.Lock()
	p.checkLocked(in, "Put")
	in.uses++
	p.unlockAndClose(p.returnLocked(in))
}

// Discard closes an instance checked out by Get instead of returning it, for one that can no
// longer be trusted (it trapped or timed out), and frees its slot. Discard panics if in is not
// checked out from p.
func (p *Pool[T]) Discard(in *Instance[T]) {
	p.mu.Lock()
	p.checkLocked(in, "Discard")
	in.busy = false
	p.busy--
	p.destroyed++
	p.releaseSlotLocked()
	p.unlockAndClose(in)
}

// checkLocked panics, unlocking p.mu, if in is not checked out from p.
func (p *Pool[T]) checkLocked(in *Instance[T], op string) {
	if in == nil || in.pool != p || !in.busy {
		p.mu.Unlock()
		panic("pool: " + op + " of an instance that is not checked out from this pool")
	}
}

// settleLocked signals a draining or closed pool once nothing is checked out or being created.
func (p *Pool[T]) settleLocked() {
	if p.closed && !p.quiescent && p.busy == 0 && p.creating == 0 {
		p.quiescent = true
		close(p.quiesced)
	}
}

// Drain stops handing out instances (waiting and later Gets return ErrClosed), closes the idle
// ones, and waits until every checked-out instance has been returned or ctx ends; instances
// returned after that are closed as they come back. It returns ctx's error, wrapped, if ctx ended
// first. Drain may be called more than once and after Close.
func (p *Pool[T]) Drain(ctx context.Context) error {
	quiesced := p.shutdown()
	select {
	case <-quiesced:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("pool: drain: %w", ctx.Err())
	}
}

// Close closes the pool at once: it stops handing out instances, closes the idle ones, and
// closes checked-out instances as they are returned. It is idempotent.
func (p *Pool[T]) Close() {
	p.shutdown()
}

// shutdown stops the pool, fails waiting Gets, closes idle instances, stops background work, and
// returns a channel closed once nothing is checked out.
func (p *Pool[T]) shutdown() <-chan struct{} {
	p.mu.Lock()
	if p.closed {
		q := p.quiesced
		p.mu.Unlock()
		return q
	}
	p.closed = true
	for p.waitHead != nil {
		p.waitHead.err = ErrClosed
		p.handLocked(nil)
	}
	p.quiesced = make(chan struct{})
	p.settleLocked()
	idle := p.idle
	p.idle = nil
	p.destroyed += uint64(len(idle))
	q := p.quiesced
	p.mu.Unlock()

	if p.bgCancel != nil {
		p.bgCancel()
		<-p.bgDone
	}
	for _, in := range idle {
		p.closeFn(in.value)
	}
	return q
}

// Stats returns a consistent snapshot of the pool's gauges and counters.
func (p *Pool[T]) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return Stats{
		Idle:      len(p.idle),
		Busy:      p.busy,
		Waiting:   p.waiting,
		Created:   p.created,
		Destroyed: p.destroyed,
		Hits:      p.hits,
		Misses:    p.misses,
		Timeouts:  p.timeouts,
	}
}

// kick asks the background loop to top up Prewarm instances.
func (p *Pool[T]) kick() {
	select {
	case p.bgKick <- struct{}{}:
	default:
	}
}

// background runs a cleanup round every IdleTTL/3 and keeps Prewarm instances ready.
func (p *Pool[T]) background() {
	defer close(p.bgDone)
	var tick <-chan time.Time
	if p.idleTTL > 0 {
		t := time.NewTicker(max(p.idleTTL/3, time.Millisecond))
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-p.bgCtx.Done():
			return
		case <-tick:
			p.expire(time.Now())
			p.refill()
		case <-p.bgKick:
			p.refill()
		}
	}
}

// expire runs a cleanup round: it closes the instances idle for IdleTTL or longer, keeping at
// least Prewarm. Put does not read the clock (time.Now would be the largest cost of a Get+Put);
// instead each round stamps the instances returned since the previous round with the current
// time, no earlier than their return, so no instance is closed before it has been idle for
// IdleTTL, and one is closed at most two rounds (2/3 IdleTTL) later when the loop is not held up.
func (p *Pool[T]) expire(now time.Time) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	for _, in := range p.idle[p.lowWater:] {
		in.idleSince = now
	}
	n := 0 // the oldest n idle instances have expired
	for n < len(p.idle)-p.prewarm && now.Sub(p.idle[n].idleSince) >= p.idleTTL {
		n++
	}
	var expired []*Instance[T]
	if n > 0 {
		expired = make([]*Instance[T], n)
		copy(expired, p.idle[:n])
		kept := copy(p.idle, p.idle[n:])
		clear(p.idle[kept:])
		p.idle = p.idle[:kept]
		p.destroyed += uint64(n)
	}
	p.lowWater = len(p.idle)
	p.mu.Unlock()
	for _, in := range expired {
		p.closeFn(in.value)
	}
}

// refill creates idle instances, one at a time, until Prewarm are ready or MaxConcurrency exist.
// After a failure it waits for the next round or kick.
func (p *Pool[T]) refill() {
	for {
		p.mu.Lock()
		need := !p.closed && len(p.idle) < p.prewarm &&
			len(p.idle)+p.busy+p.creating < p.maxConcurrency
		p.mu.Unlock()
		if !need {
			return
		}
		v, err := p.newFn(p.bgCtx)
		if err != nil {
			return
		}
		p.mu.Lock()
		p.created++
		if p.closed || len(p.idle) >= p.maxIdle {
			p.destroyed++
			p.mu.Unlock()
			p.closeFn(v)
			return
		}
		p.idle = append(p.idle, &Instance[T]{value: v, pool: p})
		p.mu.Unlock()
	}
}
