package runtime

import (
	"context"
	"errors"
	"fmt"
	goruntime "runtime"
	"sync"
	"testing"
	"time"

	"github.com/tetratelabs/wazero/sys"
)

// computeWasm exports functions of pure computation, without imports:
//   - spin: an empty endless loop (loop br 0), the tightest code a timeout has to stop;
//   - fork: f(62), where f(n) = f(n-1) + f(n-1) and f(0) = 1, 2^62 calls without a loop and never
//     deeper than 62 frames, which a check at loop headers alone would never stop;
//   - count: counts to 10,000,000 in a loop with nothing else in it and returns 0.
var computeWasm = []byte{
	0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
	0x01, 0x0d, 0x03, // type section: 3 types
	0x60, 0x01, 0x7f, 0x01, 0x7f, // 0: (i32) -> i32
	0x60, 0x00, 0x01, 0x7f, // 1: () -> i32
	0x60, 0x00, 0x00, // 2: () -> ()
	0x03, 0x05, 0x04, 0x00, 0x01, 0x02, 0x01, // functions: f, fork, spin, count
	0x07, 0x17, 0x03, // exports
	0x04, 'f', 'o', 'r', 'k', 0x00, 0x01,
	0x04, 's', 'p', 'i', 'n', 0x00, 0x02,
	0x05, 'c', 'o', 'u', 'n', 't', 0x00, 0x03,
	0x0a, 0x4a, 0x04, // code: 4 bodies
	0x1a, 0x00, // f: 26 bytes, no locals
	0x20, 0x00, 0x45, // local.get 0; i32.eqz
	0x04, 0x7f, 0x41, 0x01, // if (result i32) i32.const 1
	0x05,                                     // else
	0x20, 0x00, 0x41, 0x01, 0x6b, 0x10, 0x00, // f(n-1)
	0x20, 0x00, 0x41, 0x01, 0x6b, 0x10, 0x00, // f(n-1)
	0x6a, 0x0b, 0x0b, // i32.add; end if; end
	0x06, 0x00, 0x41, 0x3e, 0x10, 0x00, 0x0b, // fork: f(62)
	0x07, 0x00, 0x03, 0x40, 0x0c, 0x00, 0x0b, 0x0b, // spin: loop br 0 end
	0x1e, 0x01, 0x01, 0x7f, // count: 30 bytes, one i32 local i
	0x03, 0x40, 0x20, 0x00, 0x41, 0x01, 0x6a, 0x22, 0x00, // loop: i = i + 1
	0x41, 0x80, 0xad, 0xe2, 0x04, 0x49, 0x0d, 0x00, 0x0b, // br_if 0 (i < 10,000,000); end
	0x20, 0x00, 0x41, 0x80, 0xad, 0xe2, 0x04, 0x6b, 0x0b, // return i - 10,000,000
}

// rewrittenLoopWasm is computeWasm's count as a rewrite of the module at load would make it stoppable
// without help from the compiler: the loop header reads an exported mutable global (stop) that the
// host would set, and traps when it is set. BenchmarkGuardedCompute runs it unguarded to measure that
// way against the patched compiler's check.
var rewrittenLoopWasm = []byte{
	0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
	0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7f, // type: () -> i32
	0x03, 0x02, 0x01, 0x00, // function: count
	0x06, 0x06, 0x01, 0x7f, 0x01, 0x41, 0x00, 0x0b, // global: stop, mutable i32 = 0
	0x07, 0x10, 0x02, 0x05, 'c', 'o', 'u', 'n', 't', 0x00, 0x00, 0x04, 's', 't', 'o', 'p', 0x03, 0x00,
	0x0a, 0x26, 0x01, 0x24, 0x01, 0x01, 0x7f, // code: one body of 36 bytes, one i32 local i
	0x03, 0x40, // loop
	0x23, 0x00, 0x04, 0x40, 0x00, 0x0b, // if stop { unreachable }
	0x20, 0x00, 0x41, 0x01, 0x6a, 0x22, 0x00, // i = i + 1
	0x41, 0x80, 0xad, 0xe2, 0x04, 0x49, 0x0d, 0x00, 0x0b, // br_if 0 (i < 10,000,000); end
	0x20, 0x00, 0x41, 0x80, 0xad, 0xe2, 0x04, 0x6b, 0x0b, // return i - 10,000,000
}

// computeLoopIterations is how many times computeWasm's count loops.
const computeLoopIterations = 10_000_000

// TestEndlessComputeStopped shows a call that would never end stopped by its timeout within 100 ms
// of it, for a loop and for loop-free recursion, with the instance discarded and the engine still
// serving. Then twice as many calls as there are Ps run at once, so that every P is running guest
// code when the timers are due: compiled code must let the scheduler run them (within a second here,
// which leaves room for a loaded machine).
func TestEndlessComputeStopped(t *testing.T) {
	const timeout = 300 * time.Millisecond
	ctx := context.Background()
	e := newTestEngine(t)
	p, err := e.Load(ctx, computeWasm, PluginConfig{Name: "compute", Limits: Limits{CallTimeout: timeout}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(ctx)
	call := func(fn string, slack time.Duration) error {
		inst, err := p.NewInstance(ctx)
		if err != nil {
			return err
		}
		defer inst.Close(ctx)
		start := time.Now()
		_, rc, err := inst.Call(ctx, fn, nil)
		elapsed := time.Since(start)
		switch {
		case rc != sys.ExitCodeDeadlineExceeded || !errors.Is(err, context.DeadlineExceeded):
			return fmt.Errorf("%s: not stopped by the timeout: rc %d, %v", fn, rc, err)
		case elapsed > timeout+slack:
			return fmt.Errorf("%s: stopped after %v, more than %v after the timeout", fn, elapsed, slack)
		case !errors.Is(inst.Err(), context.DeadlineExceeded):
			return fmt.Errorf("%s: the stopped instance is still considered usable: %v", fn, inst.Err())
		}
		if _, _, err := inst.Call(ctx, "count", nil); !errors.Is(err, ErrUnusable) {
			return fmt.Errorf("%s: the stopped instance was called again: %v", fn, err)
		}
		return nil
	}
	for _, fn := range []string{"spin", "fork"} {
		t.Run(fn, func(t *testing.T) {
			if err := call(fn, 100*time.Millisecond); err != nil {
				t.Error(err)
			}
			n := 2 * goruntime.GOMAXPROCS(0)
			errs := make(chan error, n)
			for range n {
				go func() { errs <- call(fn, time.Second) }()
			}
			for range n {
				if err := <-errs; err != nil {
					t.Errorf("%d at once: %v", n, err)
				}
			}
		})
	}
	inst := newInstance(t, p)
	if _, rc, err := inst.Call(ctx, "count", nil); rc != 0 || err != nil {
		t.Errorf("a call that ends: rc %d, %v", rc, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, rc, err := inst.Call(ctx, "spin", nil); rc != sys.ExitCodeDeadlineExceeded || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("the caller's deadline did not stop the loop: rc %d, %v", rc, err)
	}
}

// TestGuestLetsGarbageCollectorRun shows that guests looping on every P do not hold up a garbage
// collection (which stops the world) until their calls end.
func TestGuestLetsGarbageCollectorRun(t *testing.T) {
	ctx := context.Background()
	e := newTestEngine(t)
	p, err := e.Load(ctx, computeWasm, PluginConfig{Name: "compute", Limits: Limits{CallTimeout: time.Minute}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(ctx)
	callCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	started := make(chan struct{}, goruntime.GOMAXPROCS(0))
	for range goruntime.GOMAXPROCS(0) {
		inst := newInstance(t, p)
		wg.Add(1)
		go func() {
			defer wg.Done()
			started <- struct{}{}
			inst.Call(callCtx, "spin", nil)
		}()
	}
	for range goruntime.GOMAXPROCS(0) {
		<-started
	}
	// The calls are under way (or about to be): collect repeatedly, so that most collections happen
	// while every P runs a guest.
	var longest time.Duration
	for range 10 {
		start := time.Now()
		goruntime.GC()
		longest = max(longest, time.Since(start))
	}
	stop()
	wg.Wait()
	// The calls would loop for a minute (their callTimeout): a collection that waited for them would
	// take that long. Preempted guests let it finish in milliseconds on an idle machine; 10 s leaves room
	// for a two-core machine that runs other test processes beside these guests (1 s was passed there).
	if longest > 10*time.Second {
		t.Errorf("a garbage collection took %v while guests looped", longest)
	}
}
