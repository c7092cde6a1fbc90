package hostapi

import (
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Errors an Invoker returns, possibly wrapped, to choose the HTTP status of a call. Any other
// error is answered with 500 Internal Server Error and logged; its text is not sent to the caller.
var (
	// ErrNotServed (404 Not Found): the plugin is not served on this node, or not yet.
	ErrNotServed = errors.New("plugin not served on this node")
	// ErrNoFunction (404 Not Found): the plugin exports no function of that name.
	ErrNoFunction = errors.New("plugin exports no such function")
	// ErrInputTooLarge (413 Content Too Large): the input is over the plugin's maxInputBytes.
	ErrInputTooLarge = errors.New("input too large")
	// ErrSaturated (429 Too Many Requests): no instance of the plugin became free in time. A
	// *SaturatedError says when to retry; a bare ErrSaturated means DefaultRetryAfter.
	ErrSaturated = errors.New("plugin saturated")
	// ErrTimeout (504 Gateway Timeout): the call ran out of its callTimeout. An error for which
	// errors.Is(err, context.DeadlineExceeded) holds is taken the same way while the caller is still
	// connected.
	ErrTimeout = errors.New("call timed out")
)

// DefaultRetryAfter is the Retry-After of a 429 answer when the Invoker did not give one.
const DefaultRetryAfter = time.Second

// SaturatedError is ErrSaturated with the time after which a retry may succeed (for example the
// pool's acquireTimeout). errors.Is(err, ErrSaturated) holds for it.
type SaturatedError struct {
	// RetryAfter is sent, rounded up to whole seconds and at least 1, in the Retry-After header.
	RetryAfter time.Duration
}

func (e *SaturatedError) Error() string {
	return fmt.Sprintf("plugin saturated: retry after %v", e.RetryAfter)
}

// Is reports whether target is ErrSaturated.
func (e *SaturatedError) Is(target error) bool { return target == ErrSaturated }

// PluginError is a call the plugin itself failed: it returned a non-zero code, set an error, or
// trapped. It is answered with 502 Bad Gateway, Message as the body and Code in the
// X-Plugin-Return-Code header, as `extism call` reports them.
type PluginError struct {
	// Message is the plugin's error text (what it passed to error_set), or empty.
	Message string
	// Code is the plugin's return code (rc).
	Code uint32
}

func (e *PluginError) Error() string {
	if e.Message == "" {
		return "plugin failed with return code " + strconv.FormatUint(uint64(e.Code), 10)
	}
	return e.Message
}
