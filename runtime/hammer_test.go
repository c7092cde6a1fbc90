package runtime

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"

	"github.com/wasm-operator/wasm-operator/internal/testplugins"
)

// TestHammer compiles one module from many goroutines at once and runs many instances of it
// concurrently; run it with -race.
func TestHammer(t *testing.T) {
	ctx := context.Background()
	e := newTestEngine(t)
	wasm, err := os.ReadFile(testplugins.Build(t, "counter"))
	if err != nil {
		t.Fatal(err)
	}
	const workers, calls = 8, 20
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := e.Load(ctx, wasm, PluginConfig{Name: "counter", Permissions: Permissions{Vars: &Vars{}}})
			if err != nil {
				errs <- err
				return
			}
			defer p.Close(ctx)
			inst, err := p.NewInstance(ctx)
			if err != nil {
				errs <- err
				return
			}
			defer inst.Close(ctx)
			for n := 1; n <= calls; n++ {
				out, rc, err := inst.Call(ctx, "increment", nil)
				if err != nil || rc != 0 || string(out) != fmt.Sprint(n) {
					errs <- fmt.Errorf("call %d: %q %d %v", n, out, rc, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := e.cachedModules(); n != 0 {
		t.Errorf("%d compilations left after every plugin closed", n)
	}
}
