// Package hostapi is the node host's HTTP API: callers run plugin functions with
//
//	POST /v1/namespaces/{namespace}/wasmplugins/{name}/call/{function}
//
// the input as the body and the output as the answer's body. Callers authenticate with a bearer
// token (TokenReview) and need RBAC create on wasmplugins/call in the plugin's namespace
// (SubjectAccessReview); both answers are cached briefly. The server also serves /metrics,
// /healthz and /readyz.
//
// The package knows neither wazero nor how plugins are loaded: the host implements Invoker and
// returns the package's errors, which become statuses: ErrNotServed and ErrNoFunction 404,
// ErrInputTooLarge 413, ErrSaturated 429 with Retry-After, ErrTimeout 504, *PluginError 502 with
// the plugin's error text, anything else 500. Every answer carries an X-Request-Id, the caller's
// when it sent one; the Invoker reads it with RequestID.
package hostapi
