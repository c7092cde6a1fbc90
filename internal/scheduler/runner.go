package scheduler

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	wasmv1 "github.com/wasm-operator/wasm-operator/api/v1alpha1"
	"github.com/wasm-operator/wasm-operator/internal/schedule"
)

// DefaultTimeout bounds one run when Options.Timeout is 0: room for two attempts of a ClusterFirer (its
// DefaultAttemptTimeout each), so that what stops a slow function is the plugin's own callTimeout, reported by
// its host, and this only stops a run whose hosts never answer.
const DefaultTimeout = 2*DefaultAttemptTimeout + time.Minute

// Job is one run of a schedule, what a FireFunc gets.
type Job struct {
	// Plugin is the WasmPlugin.
	Plugin types.NamespacedName
	// Generation is the plugin's generation at the last Set: the one whose hosts should run it.
	Generation int64
	// Schedule is the schedule's name.
	Schedule string
	// Scope is the schedule's scope, the Runner's.
	Scope wasmv1.ScheduleScope
	// Function is the export to call; Input its input.
	Function string
	Input    []byte
	// Tick is the tick the run is for (the time the cron expression named, not the time it started).
	Tick time.Time
}

// Result is what one run did.
type Result struct {
	// ReturnCode is the function's return code, 0 for success, or ReturnCodeNotRun when no function
	// returned one: no host ran it, the host refused the call, or the call timed out.
	ReturnCode int32
	// Message is the plugin's error text or why the run failed; empty on success. Status keeps
	// MaxMessage characters of it.
	Message string
	// Node is the node whose host ran (or last tried) the function.
	Node string
	// Duration is how long the run took; when 0 the Runner measures the FireFunc call.
	Duration time.Duration
}

// ReturnCodeNotRun is the return code of a run in which no function returned: a plugin's code is what its
// function returned, so a failure of the hosts needs one of its own that status and Events can show. Plugins
// returning -1 (0xffffffff) look the same; the message tells them apart.
const ReturnCodeNotRun int32 = -1

// Failed reports whether the run failed: a non-zero return code, or an error text (a plugin may set one
// and return 0, which Extism reports as a failure).
func (r Result) Failed() bool { return r.ReturnCode != 0 || r.Message != "" }

// FireFunc runs one job and says what happened. It is called on a goroutine of its own, possibly beside
// other runs (of other schedules, or of the same one under concurrencyPolicy Allow), with a context that
// ends at the run's timeout, when the schedule or plugin is removed, or when the Runner stops. It must not
// panic (a panic is recovered and reported as a failed run, but that hides a bug).
type FireFunc func(ctx context.Context, j Job) Result

// RecordFunc receives the new status of a schedule after each run. The Runner calls it from one goroutine
// at a time, in the order of the runs, so it needs no lock of its own; it must not block (queue the write:
// no run of any plugin is recorded meanwhile). It may call the Runner (Statuses).
type RecordFunc func(key types.NamespacedName, st wasmv1.ScheduleStatus)

// FailureFunc is told of each failed run, to emit an Event; called like RecordFunc, right after it.
type FailureFunc func(j Job, r Result)

// Options configure a Runner. Scope and Fire are required.
type Options struct {
	// Scope is the scope of the schedules this Runner fires; Set ignores the others. The controller's
	// Runner fires Cluster schedules, each host's Node ones.
	Scope wasmv1.ScheduleScope
	// Fire runs a job: a ClusterFirer's Fire for Cluster scope, NodeFirer for Node scope.
	Fire FireFunc
	// Record is told of each run's new status; optional.
	Record RecordFunc
	// OnFailure is told of each failed run; optional.
	OnFailure FailureFunc
	// Timeout bounds each run. Default DefaultTimeout.
	Timeout time.Duration
	// LeaderElection is what NeedLeaderElection returns: true for the controller, whose Cluster schedules
	// must fire in one process only; false for a host, which fires its own node's runs.
	LeaderElection bool
	// Registerer gets the Runner's metrics; nil registers none (they are still counted). Collectors already
	// registered there by another Runner are shared, so a process may have one Runner per scope.
	Registerer prometheus.Registerer
	// Clock is the time source; default the real clock. Tests give a fake one.
	Clock clock.WithTicker
}

// Runner fires the schedules of many plugins. It is a controller-runtime manager.Runnable: Set and Remove
// may be called before Start (the schedules start with it) and concurrently with everything else.
type Runner struct {
	opts    Options
	clock   clock.WithTicker
	metrics *metrics

	// recMu serializes Record and OnFailure calls, in the order of the runs; taken before mu.
	recMu sync.Mutex

	mu      sync.Mutex
	plugins map[types.NamespacedName]*plugin
	ctx     context.Context // Start's; nil before Start
	started bool
	log     logr.Logger
	wg      sync.WaitGroup
}

// plugin is the state of one WasmPlugin's schedules.
type plugin struct {
	key        types.NamespacedName
	generation int64
	suspended  bool
	schedules  map[string]*entry
}

// entry is the state of one schedule, guarded by Runner.mu.
type entry struct {
	p     *plugin
	spec  wasmv1.Schedule
	sched *schedule.Schedule
	// last is the time up to which ticks were handled (run, skipped or suspended): Due looks after it.
	last time.Time
	// status is what RecordFunc last got (or what Set was given), resultTick the tick of its lastResult.
	status     wasmv1.ScheduleStatus
	resultTick time.Time
	running    int
	// stopLoop ends the timer loop (nil when not running); stopRuns cancels the runs in flight.
	stopLoop context.CancelFunc
	runs     context.Context
	stopRuns context.CancelFunc
	removed  bool
	// loops counts the timer loops started, so that tests can tell an idempotent Set from a restart.
	loops int
}

// New makes a Runner; it fires nothing before Start.
func New(o Options) (*Runner, error) {
	if o.Scope != wasmv1.ScheduleScopeCluster && o.Scope != wasmv1.ScheduleScopeNode {
		return nil, fmt.Errorf("scheduler: scope must be %s or %s, not %q", wasmv1.ScheduleScopeCluster, wasmv1.ScheduleScopeNode, o.Scope)
	}
	if o.Fire == nil {
		return nil, errors.New("scheduler: Fire is required")
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	c := o.Clock
	if c == nil {
		c = clock.RealClock{}
	}
	m, err := newMetrics(o.Registerer)
	if err != nil {
		return nil, err
	}
	return &Runner{opts: o, clock: c, metrics: m, plugins: map[types.NamespacedName]*plugin{}, log: logr.Discard()}, nil
}

// NeedLeaderElection is Options.LeaderElection.
func (r *Runner) NeedLeaderElection() bool { return r.opts.LeaderElection }

// Start fires the schedules until ctx ends, then cancels the runs in flight, waits for them (their results
// are recorded) and returns nil. The logger is ctx's. A Runner starts once.
func (r *Runner) Start(ctx context.Context) error {
	r.mu.Lock()
	if r.started {
		r.mu.Unlock()
		return errors.New("scheduler: the Runner was already started")
	}
	r.started, r.ctx = true, ctx
	r.log = logr.FromContextOrDiscard(ctx).WithValues("scope", r.opts.Scope)
	for _, p := range r.plugins {
		for _, e := range p.schedules {
			r.startLocked(e)
		}
	}
	r.mu.Unlock()
	<-ctx.Done()
	r.wg.Wait()
	return nil
}

// Set adds or replaces the schedules of the plugin key, those of the Runner's scope among schedules, with
// generation and the plugin's suspend. last is the plugin's status.schedules: for a schedule the Runner
// does not know yet, its lastScheduleTime is the last tick run, so that ticks missed while no process fired
// (a restart, a failover) run or count as missed as startingDeadline says, like a CronJob's; a schedule
// without status starts from now. For a known schedule a later lastScheduleTime (another leader ran it)
// moves it forward, an earlier one is ignored (the status may lag behind this Runner's own runs).
//
// Set is idempotent: the same arguments change nothing. A schedule whose spec changed restarts its timer;
// a change of its expression or time zone starts it from now (its first tick is the first after the
// change), any other change keeps its last tick. Schedules no longer listed are dropped, their runs
// cancelled. Suspended (plugin or schedule) ticks pass without firing, are not counted as missed and do not
// run later. A schedule that does not parse is dropped and reported in the error (the controller reports it
// as Stalled through schedule.CheckSpec); the others are set all the same.
func (r *Runner) Set(key types.NamespacedName, generation int64, suspended bool, schedules []wasmv1.Schedule, last []wasmv1.ScheduleStatus) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.plugins[key]
	if p == nil {
		p = &plugin{key: key, schedules: map[string]*entry{}}
		r.plugins[key] = p
	}
	p.generation, p.suspended = generation, suspended

	var errs []error
	seen := map[string]bool{}
	for _, s := range schedules {
		if s.GetScope() != r.opts.Scope || seen[s.Name] {
			continue
		}
		seen[s.Name] = true
		e := p.schedules[s.Name]
		if e != nil && sameSpec(e.spec, s) {
			e.adopt(statusOf(last, s.Name))
			continue
		}
		parsed, err := schedule.Parse(s.Schedule, s.TimeZone)
		if err != nil {
			errs = append(errs, fmt.Errorf("schedule %s: %w", s.Name, err))
			if e != nil {
				r.dropLocked(e)
			}
			continue
		}
		now := r.clock.Now()
		if e == nil {
			e = &entry{p: p, last: now}
			if st := statusOf(last, s.Name); st != nil {
				e.status = *st.DeepCopy()
				if st.LastScheduleTime != nil {
					e.last = st.LastScheduleTime.Time
					e.resultTick = e.last
				}
			}
			p.schedules[s.Name] = e
		} else {
			e.stopLoopLocked()
			if e.spec.Schedule != s.Schedule || e.spec.TimeZone != s.TimeZone {
				e.last = now
			}
		}
		e.spec, e.sched = *s.DeepCopy(), parsed
		r.startLocked(e)
	}
	for name, e := range p.schedules {
		if !seen[name] {
			r.dropLocked(e)
		}
	}
	if len(p.schedules) == 0 {
		delete(r.plugins, key)
	}
	return errors.Join(errs...)
}

// Remove drops every schedule of the plugin key: no more ticks, runs in flight cancelled and not recorded,
// metrics forgotten. Call it when the plugin is deleted or no longer served here.
func (r *Runner) Remove(key types.NamespacedName) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.plugins[key]
	if p == nil {
		return
	}
	for _, e := range p.schedules {
		r.dropLocked(e)
	}
	delete(r.plugins, key)
	r.metrics.forgetPlugin(key, r.opts.Scope)
}

// Statuses returns the status of the plugin's schedules of this scope that ran (here or, as Set was told,
// before), sorted by name: what status.schedules should hold for them.
func (r *Runner) Statuses(key types.NamespacedName) []wasmv1.ScheduleStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.plugins[key]
	if p == nil {
		return nil
	}
	var out []wasmv1.ScheduleStatus
	for _, e := range p.schedules {
		if e.status.LastScheduleTime != nil {
			out = append(out, *e.status.DeepCopy())
		}
	}
	slices.SortFunc(out, func(a, b wasmv1.ScheduleStatus) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// startLocked starts e's timer loop if the Runner runs.
func (r *Runner) startLocked(e *entry) {
	if r.ctx == nil || r.ctx.Err() != nil {
		return
	}
	if e.runs == nil {
		e.runs, e.stopRuns = context.WithCancel(r.ctx)
	}
	ctx, cancel := context.WithCancel(r.ctx)
	e.stopLoop = cancel
	e.loops++
	r.wg.Add(1)
	go r.loop(ctx, e)
}

func (e *entry) stopLoopLocked() {
	if e.stopLoop != nil {
		e.stopLoop()
		e.stopLoop = nil
	}
}

// dropLocked forgets e: its loop and runs end, its results are not recorded.
func (r *Runner) dropLocked(e *entry) {
	e.stopLoopLocked()
	if e.stopRuns != nil {
		e.stopRuns()
	}
	e.removed = true
	delete(e.p.schedules, e.spec.Name)
	r.metrics.forgetSchedule(e.p.key, e.spec.Name, r.opts.Scope)
}

// adopt takes a status newer than e's: another process ran the schedule since (a leader before this one).
func (e *entry) adopt(st *wasmv1.ScheduleStatus) {
	if st == nil || st.LastScheduleTime == nil || !st.LastScheduleTime.After(e.last) {
		return
	}
	e.last = st.LastScheduleTime.Time
	e.status = *st.DeepCopy()
	e.resultTick = e.last
}

// loop waits for e's ticks until ctx ends; the first look is right away, so that a tick due at Start (missed
// during a restart) runs then.
func (r *Runner) loop(ctx context.Context, e *entry) {
	defer r.wg.Done()
	for {
		next, ok := r.tick(ctx, e)
		if !ok {
			return
		}
		wait := next.Sub(r.clock.Now())
		if wait <= 0 {
			// The next tick came while this one was handled: handle it now (a fake clock's timer of 0
			// would wait for the next step).
			continue
		}
		t := r.clock.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
	}
}

// tick handles the ticks of e due now and returns when to look again; false when the loop must end.
func (r *Runner) tick(ctx context.Context, e *entry) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ctx.Err() != nil {
		return time.Time{}, false
	}
	now := r.clock.Now()
	d := e.sched.Due(e.last, now, e.spec.GetStartingDeadline())
	// Every tick up to now is handled below, run or not, so that none is run or counted twice.
	e.last = now
	if e.p.suspended || e.spec.Suspend {
		return d.Next, true
	}
	missed := d.Missed
	if d.Run && e.running > 0 && e.spec.GetConcurrencyPolicy() == wasmv1.ConcurrencyForbid {
		missed++
		d.Run = false
	}
	if missed > 0 {
		r.metrics.missed.WithLabelValues(e.p.key.Namespace, e.p.key.Name, e.spec.Name, string(r.opts.Scope)).Add(float64(missed))
		r.log.V(1).Info("schedule missed ticks", "plugin", klog.KRef(e.p.key.Namespace, e.p.key.Name), "schedule", e.spec.Name, "missed", missed)
	}
	if d.Run {
		e.running++
		j := Job{
			Plugin: e.p.key, Generation: e.p.generation, Schedule: e.spec.Name, Scope: r.opts.Scope,
			Function: e.spec.Function, Input: []byte(e.spec.Input), Tick: d.Tick,
		}
		r.wg.Add(1)
		go r.run(e.runs, e, j)
	}
	return d.Next, true
}

// run fires j and records its result.
func (r *Runner) run(ctx context.Context, e *entry, j Job) {
	defer r.wg.Done()
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	ctx = logr.NewContext(ctx, r.log.WithValues("plugin", klog.KRef(j.Plugin.Namespace, j.Plugin.Name), "schedule", j.Schedule, "tick", j.Tick))
	start := r.clock.Now()
	res := r.fire(ctx, j)
	if res.Duration <= 0 {
		res.Duration = r.clock.Since(start)
	}
	r.finish(e, j, res)
}

func (r *Runner) fire(ctx context.Context, j Job) (res Result) {
	defer func() {
		if p := recover(); p != nil {
			r.log.Error(fmt.Errorf("%v", p), "schedule run panicked", "plugin", klog.KRef(j.Plugin.Namespace, j.Plugin.Name), "schedule", j.Schedule)
			res = Result{ReturnCode: ReturnCodeNotRun, Message: "internal error: the scheduler's run panicked"}
		}
	}()
	return r.opts.Fire(ctx, j)
}

// finish counts a run and records its status, unless its schedule was dropped meanwhile.
func (r *Runner) finish(e *entry, j Job, res Result) {
	r.recMu.Lock()
	defer r.recMu.Unlock()
	r.mu.Lock()
	e.running--
	if e.removed {
		r.mu.Unlock()
		return
	}
	failed := res.Failed()
	lbl := []string{j.Plugin.Namespace, j.Plugin.Name, j.Schedule, string(j.Scope)}
	r.metrics.runs.WithLabelValues(lbl...).Inc()
	r.metrics.duration.WithLabelValues(lbl...).Observe(res.Duration.Seconds())
	if failed {
		r.metrics.failures.WithLabelValues(lbl...).Inc()
	}
	newer := !j.Tick.Before(e.resultTick)
	e.status = nextStatus(e.status, j.Schedule, j.Tick, res, newer)
	if newer {
		e.resultTick = j.Tick
	}
	st := *e.status.DeepCopy()
	r.mu.Unlock()

	if failed {
		r.log.Info("schedule run failed", "plugin", klog.KRef(j.Plugin.Namespace, j.Plugin.Name), "schedule", j.Schedule, "tick", j.Tick,
			"returnCode", res.ReturnCode, "node", res.Node, "message", st.LastResult.Message)
	} else if v := r.log.V(1); v.Enabled() {
		v.Info("schedule run", "plugin", klog.KRef(j.Plugin.Namespace, j.Plugin.Name), "schedule", j.Schedule, "tick", j.Tick, "node", res.Node, "duration", res.Duration)
	}
	if r.opts.Record != nil {
		r.opts.Record(j.Plugin, st)
	}
	if failed && r.opts.OnFailure != nil {
		res.Message = CutMessage(res.Message)
		r.opts.OnFailure(j, res)
	}
}

// sameSpec reports whether two schedules fire the same way.
func sameSpec(a, b wasmv1.Schedule) bool {
	return a.Name == b.Name && a.Schedule == b.Schedule && a.TimeZone == b.TimeZone && a.Function == b.Function &&
		a.Input == b.Input && a.GetScope() == b.GetScope() && a.GetConcurrencyPolicy() == b.GetConcurrencyPolicy() &&
		a.GetStartingDeadline() == b.GetStartingDeadline() && a.Suspend == b.Suspend
}

func statusOf(last []wasmv1.ScheduleStatus, name string) *wasmv1.ScheduleStatus {
	for i := range last {
		if last[i].Name == name {
			return &last[i]
		}
	}
	return nil
}
