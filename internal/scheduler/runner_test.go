package scheduler

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"

	wasmv1 "github.com/wasm-operator/wasm-operator/api/v1alpha1"
)

// base is a whole minute, so that "* * * * *" ticks fall on base + n minutes.
var base = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

var key = types.NamespacedName{Namespace: "shop", Name: "warmer"}

type record struct {
	key types.NamespacedName
	st  wasmv1.ScheduleStatus
}

// harness runs a Runner on a fake clock with a FireFunc that reports each job and, while hold is set, waits
// for release before answering.
type harness struct {
	t       *testing.T
	clk     *clocktesting.FakeClock
	reg     *prometheus.Registry
	r       *Runner
	fired   chan Job
	records chan record
	fails   chan Result

	mu      sync.Mutex
	hold    bool
	release chan struct{}
	result  Result
}

func newHarness(t *testing.T, now time.Time) *harness {
	t.Helper()
	h := &harness{
		t: t, clk: clocktesting.NewFakeClock(now), reg: prometheus.NewRegistry(),
		fired: make(chan Job, 100), records: make(chan record, 100), fails: make(chan Result, 100),
		release: make(chan struct{}),
	}
	r, err := New(Options{
		Scope:      wasmv1.ScheduleScopeCluster,
		Fire:       h.fire,
		Record:     func(k types.NamespacedName, st wasmv1.ScheduleStatus) { h.records <- record{k, st} },
		OnFailure:  func(_ Job, res Result) { h.fails <- res },
		Registerer: h.reg,
		Clock:      h.clk,
	})
	if err != nil {
		t.Fatal(err)
	}
	h.r = r
	return h
}

func (h *harness) fire(ctx context.Context, j Job) Result {
	h.fired <- j
	h.mu.Lock()
	hold, release, res := h.hold, h.release, h.result
	h.mu.Unlock()
	if hold {
		select {
		case <-release:
		case <-ctx.Done():
			return Result{ReturnCode: ReturnCodeNotRun, Message: "cancelled"}
		}
	}
	return res
}

// start starts the Runner and waits until loops timer loops wait on the clock.
func (h *harness) start(loops int) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- h.r.Start(ctx) }()
	h.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			h.t.Errorf("Start: %v", err)
		}
	})
	h.waitLoops(loops)
}

// waitLoops waits until n timer loops wait on the clock: after a Step, that is when they handled the tick.
func (h *harness) waitLoops(n int) {
	h.t.Helper()
	eventually(h.t, func() bool { return h.clk.Waiters() == n }, "%d timer loops waiting, have %d", n, h.clk.Waiters())
}

// step moves the clock by d and waits for the loops to handle it.
func (h *harness) step(d time.Duration, loops int) {
	h.t.Helper()
	h.clk.Step(d)
	h.waitLoops(loops)
}

func (h *harness) job() Job {
	h.t.Helper()
	select {
	case j := <-h.fired:
		return j
	case <-time.After(10 * time.Second):
		h.t.Fatal("no job fired")
		return Job{}
	}
}

func (h *harness) record() record {
	h.t.Helper()
	select {
	case rec := <-h.records:
		return rec
	case <-time.After(10 * time.Second):
		h.t.Fatal("no status recorded")
		return record{}
	}
}

func (h *harness) noJob() {
	h.t.Helper()
	select {
	case j := <-h.fired:
		h.t.Fatalf("fired %s at tick %v; want nothing", j.Schedule, j.Tick)
	default:
	}
}

func (h *harness) counter(name, sched string) float64 {
	var c *prometheus.CounterVec
	switch name {
	case MetricRuns:
		c = h.r.metrics.runs
	case MetricFailures:
		c = h.r.metrics.failures
	case MetricMissed:
		c = h.r.metrics.missed
	}
	return testutil.ToFloat64(c.WithLabelValues(key.Namespace, key.Name, sched, "Cluster"))
}

// series counts the series of the plugin name in reg.
func series(t *testing.T, reg *prometheus.Registry, name string) int {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "plugin" && l.GetValue() == name {
					n++
				}
			}
		}
	}
	return n
}

func eventually(t *testing.T, cond func() bool, format string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: "+format, args...)
		}
		time.Sleep(time.Millisecond)
	}
}

func every(name, expr string) wasmv1.Schedule {
	return wasmv1.Schedule{Name: name, Schedule: expr, Function: "warm", Input: `{"n":1}`}
}

func mustSet(t *testing.T, r *Runner, generation int64, suspended bool, s []wasmv1.Schedule, last []wasmv1.ScheduleStatus) {
	t.Helper()
	if err := r.Set(key, generation, suspended, s, last); err != nil {
		t.Fatal(err)
	}
}

func TestFiresOncePerTick(t *testing.T) {
	h := newHarness(t, base)
	mustSet(t, h.r, 3, false, []wasmv1.Schedule{every("a", "* * * * *")}, nil)
	h.start(1)
	h.step(30*time.Second, 1)
	h.noJob()
	for i := 1; i <= 3; i++ {
		h.step(30*time.Second, 1)
		j := h.job()
		want := Job{Plugin: key, Generation: 3, Schedule: "a", Scope: wasmv1.ScheduleScopeCluster, Function: "warm",
			Input: []byte(`{"n":1}`), Tick: base.Add(time.Duration(i) * time.Minute)}
		if fmt.Sprint(j) != fmt.Sprint(want) {
			t.Fatalf("tick %d: job %+v, want %+v", i, j, want)
		}
		rec := h.record()
		if rec.key != key || rec.st.Name != "a" || !rec.st.LastScheduleTime.Equal(&metav1.Time{Time: want.Tick}) ||
			!rec.st.LastSuccessfulTime.Equal(&metav1.Time{Time: want.Tick}) || rec.st.LastResult.ReturnCode != 0 {
			t.Fatalf("tick %d: recorded %+v", i, rec.st)
		}
		h.step(30*time.Second, 1)
		h.noJob()
	}
	if runs, missed := h.counter(MetricRuns, "a"), h.counter(MetricMissed, "a"); runs != 3 || missed != 0 {
		t.Fatalf("runs %v missed %v; want 3 and 0", runs, missed)
	}
	if got := h.r.Statuses(key); len(got) != 1 || !got[0].LastScheduleTime.Time.Equal(base.Add(3*time.Minute)) {
		t.Fatalf("Statuses = %+v", got)
	}
}

func TestConcurrencyPolicy(t *testing.T) {
	for _, c := range []struct {
		policy wasmv1.ConcurrencyPolicy
		// whether the second tick fires while the first run still runs, and the misses counted
		fires  bool
		missed float64
	}{
		{"", false, 1}, // the default is Forbid
		{wasmv1.ConcurrencyForbid, false, 1},
		{wasmv1.ConcurrencyAllow, true, 0},
	} {
		t.Run(string(c.policy), func(t *testing.T) {
			h := newHarness(t, base)
			h.hold = true
			s := every("a", "* * * * *")
			s.ConcurrencyPolicy = c.policy
			mustSet(t, h.r, 1, false, []wasmv1.Schedule{s}, nil)
			h.start(1)
			h.step(time.Minute, 1)
			if j := h.job(); !j.Tick.Equal(base.Add(time.Minute)) {
				t.Fatalf("first job for %v", j.Tick)
			}
			h.step(time.Minute, 1) // the first run still runs
			if c.fires {
				if j := h.job(); !j.Tick.Equal(base.Add(2 * time.Minute)) {
					t.Fatalf("second job for %v", j.Tick)
				}
			} else {
				h.noJob()
			}
			if got := h.counter(MetricMissed, "a"); got != c.missed {
				t.Fatalf("missed %v, want %v", got, c.missed)
			}
			h.mu.Lock()
			h.hold = false
			close(h.release)
			h.mu.Unlock()
			h.record()
			if c.fires {
				h.record()
			}
			h.step(time.Minute, 1) // the run is over: the next tick fires whatever the policy
			if j := h.job(); !j.Tick.Equal(base.Add(3 * time.Minute)) {
				t.Fatalf("third job for %v", j.Tick)
			}
			h.record()
		})
	}
}

func TestSuspend(t *testing.T) {
	for _, c := range []struct {
		name            string
		plugin, schedul bool
	}{
		{"plugin suspended", true, false},
		{"schedule suspended", false, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t, base)
			s := every("a", "* * * * *")
			s.Suspend = c.schedul
			mustSet(t, h.r, 1, c.plugin, []wasmv1.Schedule{s}, nil)
			h.start(1)
			for range 3 {
				h.step(time.Minute, 1)
			}
			h.noJob()
			if missed := h.counter(MetricMissed, "a"); missed != 0 {
				t.Fatalf("suspended ticks counted as missed: %v", missed)
			}
			// Resumed, it runs the next tick, not the ones that passed while suspended.
			h.step(30*time.Second, 1)
			s.Suspend = false
			mustSet(t, h.r, 1, false, []wasmv1.Schedule{s}, nil)
			h.waitLoops(1)
			h.noJob()
			h.step(30*time.Second, 1)
			if j := h.job(); !j.Tick.Equal(base.Add(4 * time.Minute)) {
				t.Fatalf("resumed job for %v, want the tick after resuming", j.Tick)
			}
			h.record()
		})
	}
}

// A restarted controller knows the last tick run from status.schedules: the most recent tick missed since
// runs if startingDeadline allows, the others count as missed, and lastSuccessfulTime is kept.
func TestRestartFollowsStartingDeadline(t *testing.T) {
	now := base.Add(10*time.Minute + 30*time.Second)
	lastRun := metav1.NewTime(base.Add(5 * time.Minute))
	lastOK := metav1.NewTime(base.Add(3 * time.Minute))
	last := []wasmv1.ScheduleStatus{{Name: "a", LastScheduleTime: &lastRun, LastSuccessfulTime: &lastOK,
		LastResult: &wasmv1.ScheduleResult{ReturnCode: 1, Message: "old"}}}
	for _, c := range []struct {
		name     string
		deadline time.Duration
		runs     bool // the 12:10 tick runs at start
		missed   float64
	}{
		{"no deadline", 0, true, 4},
		{"inside the deadline", time.Minute, true, 4},
		{"outside the deadline", 10 * time.Second, false, 5},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t, now)
			h.result = Result{ReturnCode: 2, Message: "still failing", Node: "node-b"}
			s := every("a", "* * * * *")
			if c.deadline > 0 {
				s.StartingDeadline = &metav1.Duration{Duration: c.deadline}
			}
			mustSet(t, h.r, 1, false, []wasmv1.Schedule{s}, last)
			h.start(1)
			if c.runs {
				if j := h.job(); !j.Tick.Equal(base.Add(10 * time.Minute)) {
					t.Fatalf("ran tick %v, want 12:10", j.Tick)
				}
				st := h.record().st
				if !st.LastScheduleTime.Time.Equal(base.Add(10*time.Minute)) || !st.LastSuccessfulTime.Equal(&lastOK) ||
					st.LastResult.ReturnCode != 2 || st.LastResult.Message != "still failing" || st.LastResult.Node != "node-b" {
					t.Fatalf("status %+v %+v", st, st.LastResult)
				}
				if r := <-h.fails; r.Message != "still failing" {
					t.Fatalf("OnFailure got %+v", r)
				}
			} else {
				h.noJob()
				if got := h.r.Statuses(key); len(got) != 1 || !got[0].LastScheduleTime.Equal(&lastRun) {
					t.Fatalf("the status given is not kept: %+v", got)
				}
			}
			if got := h.counter(MetricMissed, "a"); got != c.missed {
				t.Fatalf("missed %v, want %v", got, c.missed)
			}
			h.step(30*time.Second, 1)
			if j := h.job(); !j.Tick.Equal(base.Add(11 * time.Minute)) {
				t.Fatalf("next job for %v, want 12:11", j.Tick)
			}
			h.record()
		})
	}
}

func TestChangedSchedule(t *testing.T) {
	h := newHarness(t, base)
	s := every("a", "* * * * *")
	mustSet(t, h.r, 1, false, []wasmv1.Schedule{s}, nil)
	h.start(1)
	loops := func() int {
		h.r.mu.Lock()
		defer h.r.mu.Unlock()
		return h.r.plugins[key].schedules["a"].loops
	}

	// The same input on every reconcile changes nothing, whatever the status says (it lags behind).
	for range 3 {
		mustSet(t, h.r, 1, false, []wasmv1.Schedule{s}, nil)
	}
	if n := loops(); n != 1 {
		t.Fatalf("an unchanged Set restarted the timer: %d loops", n)
	}

	// Another input or generation takes effect at the next tick, without a restart for the generation.
	mustSet(t, h.r, 2, false, []wasmv1.Schedule{s}, nil)
	if n := loops(); n != 1 {
		t.Fatalf("a new generation restarted the timer: %d loops", n)
	}
	s.Input = "two"
	mustSet(t, h.r, 2, false, []wasmv1.Schedule{s}, nil)
	h.waitLoops(1)
	h.step(time.Minute, 1)
	if j := h.job(); string(j.Input) != "two" || j.Generation != 2 || !j.Tick.Equal(base.Add(time.Minute)) {
		t.Fatalf("job %+v", j)
	}
	h.record()

	// A new expression starts from now: every 5 minutes, first at 12:05.
	s.Schedule = "*/5 * * * *"
	mustSet(t, h.r, 2, false, []wasmv1.Schedule{s}, nil)
	h.waitLoops(1)
	for range 3 {
		h.step(time.Minute, 1)
	}
	h.noJob()
	h.step(time.Minute, 1)
	if j := h.job(); !j.Tick.Equal(base.Add(5 * time.Minute)) {
		t.Fatalf("job for %v, want 12:05", j.Tick)
	}
	h.record()

	// A schedule dropped from the spec stops and leaves no series; another one starts.
	mustSet(t, h.r, 3, false, []wasmv1.Schedule{every("b", "* * * * *")}, nil)
	h.waitLoops(1)
	if n := testutil.CollectAndCount(h.reg, MetricRuns); n != 0 {
		t.Fatalf("%d runs series left for schedule a", n)
	}
	h.step(time.Minute, 1)
	if j := h.job(); j.Schedule != "b" {
		t.Fatalf("job for %s", j.Schedule)
	}
	h.record()
	h.noJob()
}

func TestRemove(t *testing.T) {
	h := newHarness(t, base)
	h.hold = true
	mustSet(t, h.r, 1, false, []wasmv1.Schedule{every("a", "* * * * *"), every("b", "*/2 * * * *")}, nil)
	other := types.NamespacedName{Namespace: "shop", Name: "other"}
	if err := h.r.Set(other, 1, false, []wasmv1.Schedule{every("a", "* * * * *")}, nil); err != nil {
		t.Fatal(err)
	}
	h.start(3)
	h.step(2*time.Minute, 3)
	for range 3 {
		h.job()
	}
	h.r.Remove(key)
	h.waitLoops(1)
	h.mu.Lock()
	h.hold = false
	close(h.release)
	h.mu.Unlock()
	// Only the other plugin's run is recorded: the removed plugin's were cancelled and are not.
	if rec := h.record(); rec.key != other {
		t.Fatalf("recorded %v after it was removed", rec.key)
	}
	select {
	case rec := <-h.records:
		t.Fatalf("recorded %v after it was removed", rec.key)
	default:
	}
	if n := series(t, h.reg, key.Name); n != 0 {
		t.Fatalf("%d series left of the removed plugin", n)
	}
	if n := series(t, h.reg, other.Name); n == 0 {
		t.Fatal("the other plugin's series were removed too")
	}
	h.step(time.Minute, 1)
	if j := h.job(); j.Plugin != other {
		t.Fatalf("fired %v after it was removed", j.Plugin)
	}
	if h.r.Statuses(key) != nil {
		t.Fatal("Statuses of a removed plugin")
	}
}

func TestSetScopeAndBadInput(t *testing.T) {
	h := newHarness(t, base)
	node := every("local", "* * * * *")
	node.Scope = wasmv1.ScheduleScopeNode
	err := h.r.Set(key, 1, false, []wasmv1.Schedule{every("ok", "* * * * *"), every("bad", "0 25 * * *"), node}, nil)
	if err == nil || !strings.Contains(err.Error(), `schedule bad: schedule "0 25 * * *" is not a cron expression`) {
		t.Fatalf("Set = %v; want the bad schedule named", err)
	}
	h.start(1) // only "ok": the Node schedule is the hosts', the bad one does not run
	h.step(time.Minute, 1)
	if j := h.job(); j.Schedule != "ok" {
		t.Fatalf("fired %s", j.Schedule)
	}
	h.record()
	h.noJob()
}

func TestTimeoutAndPanic(t *testing.T) {
	for _, c := range []struct {
		name string
		fire FireFunc
		want string
	}{
		{"timeout", func(ctx context.Context, _ Job) Result {
			<-ctx.Done()
			return Result{ReturnCode: ReturnCodeNotRun, Message: ctx.Err().Error()}
		}, "context deadline exceeded"},
		{"panic", func(context.Context, Job) Result { panic("boom") }, "internal error"},
	} {
		t.Run(c.name, func(t *testing.T) {
			clk := clocktesting.NewFakeClock(base)
			recs := make(chan wasmv1.ScheduleStatus, 1)
			r, err := New(Options{Scope: wasmv1.ScheduleScopeCluster, Fire: c.fire, Timeout: 10 * time.Millisecond, Clock: clk,
				Record: func(_ types.NamespacedName, st wasmv1.ScheduleStatus) { recs <- st }})
			if err != nil {
				t.Fatal(err)
			}
			mustSet(t, r, 1, false, []wasmv1.Schedule{every("a", "* * * * *")}, nil)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go func() { _ = r.Start(ctx) }()
			eventually(t, func() bool { return clk.Waiters() == 1 }, "loop")
			clk.Step(time.Minute)
			st := <-recs
			if st.LastResult.ReturnCode != ReturnCodeNotRun || !strings.Contains(st.LastResult.Message, c.want) || st.LastSuccessfulTime != nil {
				t.Fatalf("status %+v", st.LastResult)
			}
		})
	}
}

// The real clock: an @every 1s schedule fires about once a second.
func TestRealClock(t *testing.T) {
	fired := make(chan Job, 10)
	r, err := New(Options{Scope: wasmv1.ScheduleScopeCluster, Fire: func(_ context.Context, j Job) Result { fired <- j; return Result{} }})
	if err != nil {
		t.Fatal(err)
	}
	mustSet(t, r, 1, false, []wasmv1.Schedule{every("a", "@every 1s")}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.Start(ctx) }()
	a, b := <-fired, <-fired
	if d := b.Tick.Sub(a.Tick); d != time.Second {
		t.Fatalf("ticks %v apart", d)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := r.Start(context.Background()); err == nil {
		t.Fatal("a second Start succeeded")
	}
}

// Reconcilers call Set and Remove from many goroutines while schedules fire.
func TestHammer(t *testing.T) {
	r, err := New(Options{Scope: wasmv1.ScheduleScopeCluster, Fire: func(context.Context, Job) Result { return Result{} },
		Record: func(types.NamespacedName, wasmv1.ScheduleStatus) {}, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.Start(ctx) }()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				k := types.NamespacedName{Namespace: "ns", Name: fmt.Sprint("p", (g+i)%5)}
				s := every("a", "@every 1s")
				s.Input = fmt.Sprint(i % 3)
				s.ConcurrencyPolicy = wasmv1.ConcurrencyAllow
				_ = r.Set(k, int64(i), i%7 == 0, []wasmv1.Schedule{s, every("b", "* * * * *")}, nil)
				r.Statuses(k)
				if i%11 == 0 {
					r.Remove(k)
				}
			}
		})
	}
	wg.Wait()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestNew(t *testing.T) {
	if _, err := New(Options{Scope: "Everywhere", Fire: func(context.Context, Job) Result { return Result{} }}); err == nil ||
		!strings.Contains(err.Error(), "scope must be Cluster or Node") {
		t.Fatalf("New = %v", err)
	}
	if _, err := New(Options{Scope: wasmv1.ScheduleScopeNode}); err == nil {
		t.Fatal("New without Fire succeeded")
	}
	// Two Runners share one registry (one per scope in a process).
	reg := prometheus.NewRegistry()
	for _, s := range []wasmv1.ScheduleScope{wasmv1.ScheduleScopeCluster, wasmv1.ScheduleScopeNode} {
		r, err := New(Options{Scope: s, LeaderElection: s == wasmv1.ScheduleScopeCluster, Registerer: reg,
			Fire: func(context.Context, Job) Result { return Result{} }})
		if err != nil {
			t.Fatal(err)
		}
		if r.NeedLeaderElection() != (s == wasmv1.ScheduleScopeCluster) {
			t.Fatalf("%s: NeedLeaderElection = %v", s, r.NeedLeaderElection())
		}
	}
}
