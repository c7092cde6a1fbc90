// Package source fetches WebAssembly modules from where a WasmPlugin says they
// are: an HTTP(S) URL, an OCI registry, or a ConfigMap.
//
// It knows nothing of the Kubernetes API: the reconciler reads the referenced
// Secret or ConfigMap and passes plain values in (headers, a bearer token, a
// CA, the .dockerconfigjson of a pull secret, a ConfigMap's binaryData).
// Every fetch returns an *Artifact (bytes, resolved identity, sha256) or an
// *Error that says what is wrong and what to do, whose Kind (ErrNotFound,
// ErrTooLarge, ErrUnauthorized, ErrNotWasm, ErrInvalid) the reconciler turns
// into a Stalled reason, and whose Transient flag says whether to requeue with
// backoff instead. Network errors and 5xx answers are retried within the call
// with exponential backoff; 4xx answers never are. Content that does not start
// with the WebAssembly magic bytes is refused. CheckDigest compares the result
// with a spec.sha256 pin.
//
// A Fetcher's Guard decides which hosts and addresses HTTP and OCI fetches may
// reach (loopback and link-local never; private ones and hosts outside an
// allowlist as configured), on every request and at dial time, and no message
// ever carries what a server answered beyond 4 bytes in hex.
package source
