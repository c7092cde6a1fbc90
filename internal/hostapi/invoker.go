package hostapi

import "context"

// DefaultMaxInputBytes is the input cap of a plugin whose Invoker reports none: the default of
// spec.limits.maxInputBytes (4Mi).
const DefaultMaxInputBytes = 4 << 20

// Invoker runs plugin functions; the node host implements it over its pools. Its methods are
// called concurrently.
type Invoker interface {
	// MaxInputBytes reports whether the plugin namespace/name is served on this node and, when it
	// is, the largest input a call may carry (spec.limits.maxInputBytes); a limit of 0 or less
	// means DefaultMaxInputBytes. The server asks before it reads the body, so that an input
	// over the cap is refused without being buffered.
	MaxInputBytes(namespace, name string) (limit int64, served bool)

	// Invoke calls function of the plugin with input and returns its output. Errors are mapped
	// to HTTP statuses as the package's errors document. input is valid only until Invoke
	// returns: the server reuses its buffer. ctx carries the request id (RequestID) and a logger
	// (logr.FromContext) with the request id, namespace, name and function; it is cancelled when
	// the caller goes away.
	Invoke(ctx context.Context, namespace, name, function string, input []byte) ([]byte, error)
}

type requestIDKey struct{}

// RequestID returns the id of the call request ctx belongs to: the caller's X-Request-Id when it
// sent a usable one, else one the server made. It is "" outside a call.
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}
