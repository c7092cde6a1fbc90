package experimental_test

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/internal/testing/require"
	"github.com/tetratelabs/wazero/sys"
)

// spinWasm exports spin, an empty endless loop, and fork, f(62) where f(n) = f(n-1) + f(n-1): 2^62
// calls without a loop.
var spinWasm = []byte{
	0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
	0x01, 0x0d, 0x03, 0x60, 0x01, 0x7f, 0x01, 0x7f, 0x60, 0x00, 0x01, 0x7f, 0x60, 0x00, 0x00,
	0x03, 0x04, 0x03, 0x00, 0x01, 0x02,
	0x07, 0x0f, 0x02, 0x04, 'f', 'o', 'r', 'k', 0x00, 0x01, 0x04, 's', 'p', 'i', 'n', 0x00, 0x02,
	0x0a, 0x2b, 0x03,
	0x1a, 0x00, 0x20, 0x00, 0x45, 0x04, 0x7f, 0x41, 0x01, 0x05,
	0x20, 0x00, 0x41, 0x01, 0x6b, 0x10, 0x00, 0x20, 0x00, 0x41, 0x01, 0x6b, 0x10, 0x00, 0x6a, 0x0b, 0x0b,
	0x06, 0x00, 0x41, 0x3e, 0x10, 0x00, 0x0b,
	0x07, 0x00, 0x03, 0x40, 0x0c, 0x00, 0x0b, 0x0b,
}

// stopperCtx stops its calls itself.
type stopperCtx struct{ context.Context }

func (stopperCtx) StopsCalls() {}

// TestStopModule stops running calls from a timer, with a single P that the call occupies: compiled
// code must yield for the timer to run, and must see the module closed at a loop header (spin) or a
// function entry (fork). No goroutine watches the context.
func TestStopModule(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	ctx := context.Background()
	r := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigCompiler().WithCloseOnContextDone(true))
	defer r.Close(ctx)
	compiled, err := r.CompileModule(ctx, spinWasm)
	require.NoError(t, err)

	for _, fn := range []string{"spin", "fork"} {
		t.Run(fn, func(t *testing.T) {
			mod, err := r.InstantiateModule(ctx, compiled, wazero.NewModuleConfig().WithName(""))
			require.NoError(t, err)
			defer mod.Close(ctx)
			goroutines := runtime.NumGoroutine()
			timer := time.AfterFunc(50*time.Millisecond, func() {
				if n := runtime.NumGoroutine(); n > goroutines+1 { // + this timer's
					t.Errorf("%d goroutines during the call, %d before", n, goroutines)
				}
				if !experimental.StopModule(mod, sys.ExitCodeDeadlineExceeded) {
					t.Error("StopModule found the module closed")
				}
			})
			defer timer.Stop()
			_, err = mod.ExportedFunction(fn).Call(stopperCtx{ctx})
			var exit *sys.ExitError
			require.True(t, errors.As(err, &exit), "%v", err)
			require.Equal(t, sys.ExitCodeDeadlineExceeded, exit.ExitCode())
			require.False(t, experimental.StopModule(mod, sys.ExitCodeContextCanceled))
		})
	}
}

// TestStopModule_afterCall shows a module stopped after its call returned releasing its resources at
// Close, not before.
func TestStopModule_afterCall(t *testing.T) {
	ctx := context.Background()
	r := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigCompiler().WithCloseOnContextDone(true))
	defer r.Close(ctx)
	var notified []uint32
	mod, err := r.InstantiateWithConfig(experimental.WithCloseNotifier(ctx, experimental.CloseNotifyFunc(
		func(_ context.Context, code uint32) { notified = append(notified, code) })), spinWasm, wazero.NewModuleConfig())
	require.NoError(t, err)
	require.True(t, experimental.StopModule(mod, sys.ExitCodeDeadlineExceeded))
	require.True(t, mod.IsClosed())
	require.Equal(t, 0, len(notified))
	require.NoError(t, mod.Close(ctx))
	require.Equal(t, []uint32{sys.ExitCodeDeadlineExceeded}, notified)
	require.NoError(t, mod.Close(ctx))
	require.Equal(t, 1, len(notified))
}
