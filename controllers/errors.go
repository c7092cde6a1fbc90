package controllers

import (
	"errors"
	"fmt"

	wasmv1 "github.com/wasm-operator/wasm-operator/api/v1alpha1"
	"github.com/wasm-operator/wasm-operator/internal/source"
	"github.com/wasm-operator/wasm-operator/runtime"
)

// stallError is a failure only the user can fix: the plugin is marked Stalled with Reason, and it is not
// retried until the spec or a referenced object changes.
type stallError struct {
	Reason string
	Err    error
}

func (e *stallError) Error() string { return e.Err.Error() }
func (e *stallError) Unwrap() error { return e.Err }

func stall(reason string, format string, args ...any) *stallError {
	return &stallError{Reason: reason, Err: fmt.Errorf(format, args...)}
}

// classifyFetch turns a fetch error into a stall with the reason that says what to change, or returns it
// unchanged when it may pass (network errors, 5xx), so it is retried with backoff.
func classifyFetch(err error) error {
	if err == nil || source.IsTransient(err) {
		return err
	}
	reason := wasmv1.ReasonFetchFailed
	switch {
	case errors.Is(err, source.ErrNotFound):
		reason = wasmv1.ReasonSourceNotFound
	case errors.Is(err, source.ErrTooLarge):
		reason = wasmv1.ReasonTooLarge
	case errors.Is(err, source.ErrUnauthorized):
		reason = wasmv1.ReasonUnauthorized
	case errors.Is(err, source.ErrNotWasm):
		reason = wasmv1.ReasonInvalidModule
	case errors.Is(err, source.ErrInvalid):
		reason = wasmv1.ReasonInvalidSource
	case errors.Is(err, source.ErrDigestMismatch):
		reason = wasmv1.ReasonDigestMismatch
	}
	return &stallError{Reason: reason, Err: err}
}

// classifyModule turns a module check error into a stall: PermissionDenied when every problem is an import
// whose permission is not granted, InvalidModule otherwise.
func classifyModule(err error) *stallError {
	var ie *runtime.ImportError
	reason := wasmv1.ReasonInvalidModule
	if errors.As(err, &ie) && ie.Permission != "" && !errors.Is(err, runtime.ErrMemoryLimit) &&
		!errors.Is(err, runtime.ErrNoCallableExport) {
		reason = wasmv1.ReasonPermissionDenied
	}
	return &stallError{Reason: reason, Err: err}
}
