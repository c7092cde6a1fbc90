package experimental

import (
	"context"

	"github.com/tetratelabs/wazero/api"
)

// CallStopper is implemented by a context.Context whose owner stops the calls made with it itself,
// with StopModule, for example from a time.AfterFunc it resets per call. With
// RuntimeConfig.WithCloseOnContextDone, wazero then does not start a goroutine per call to watch the
// context's Done channel. Done may still be used by host functions to return early.
type CallStopper interface {
	context.Context
	// StopsCalls marks the context; wazero never calls it.
	StopsCalls()
}

// StopModule closes mod with exitCode and may be called from any goroutine while one of mod's
// functions runs: compiled with RuntimeConfig.WithCloseOnContextDone, the running call returns a
// *sys.ExitError with exitCode at its next loop header or function entry, and blocking host functions
// are expected to return on their own (for example on the Done channel of the call's context). The
// module's resources are released by that call, or by the next Close, never under a running call.
// It returns false when mod was closed already or is not a module wazero instantiated.
func StopModule(mod api.Module, exitCode uint32) bool {
	s, ok := mod.(interface{ StopWithExitCode(uint32) bool })
	return ok && s.StopWithExitCode(exitCode)
}
