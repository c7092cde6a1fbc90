package source

import (
	"errors"
	"fmt"
)

// Kinds of failure a caller can test for with errors.Is. Every error a fetch
// returns is an *Error; Kind is one of these or nil for failures that have no
// kind of their own (a server error, a network error, a protocol error).
var (
	// ErrNotFound: the URL, image, tag, blob or ConfigMap key does not exist.
	ErrNotFound = errors.New("not found")
	// ErrTooLarge: the module is bigger than the size cap.
	ErrTooLarge = errors.New("too large")
	// ErrUnauthorized: the server or registry refused the credentials (or
	// their absence).
	ErrUnauthorized = errors.New("unauthorized")
	// ErrNotWasm: the content fetched is not a WebAssembly binary module.
	ErrNotWasm = errors.New("not a WebAssembly module")
	// ErrInvalid: the source itself is malformed (a bad URL, image
	// reference, header, CA certificate or pull secret).
	ErrInvalid = errors.New("invalid source")
	// ErrDigestMismatch: the content does not match the pinned sha256.
	ErrDigestMismatch = errors.New("digest mismatch")
)

// Error describes a failed fetch: which source, what went wrong, what to do
// about it, and whether trying again later may succeed.
type Error struct {
	// Type is the source type: "http", "oci" or "configMap".
	Type string
	// Ref names the source without secrets: the URL (password redacted),
	// the image reference, or the ConfigMap namespace/name.
	Ref string
	// Kind is ErrNotFound, ErrTooLarge, ErrUnauthorized, ErrNotWasm,
	// ErrInvalid or nil.
	Kind error
	// Transient is true when the same request may succeed later (network
	// errors, timeouts, 5xx, 429); the caller should requeue with backoff and
	// keep serving the last good module. When false the user has to change
	// something first.
	Transient bool
	// Msg says what is wrong and what to do, in words a user understands.
	Msg string
	// Err is the underlying cause, if any.
	Err error

	// retry marks failures this package retries itself (network errors and
	// 5xx); 429 and 408 are transient but left to the caller's backoff.
	retry bool
}

func (e *Error) Error() string {
	s := "fetch module from " + e.Ref + ": " + e.Msg
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the kind and the cause, so errors.Is works on both.
func (e *Error) Unwrap() []error {
	var errs []error
	if e.Kind != nil {
		errs = append(errs, e.Kind)
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}

// IsTransient reports whether err is worth retrying later without any change
// by the user. Unknown errors are not transient.
func IsTransient(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Transient
}

// DigestMismatchError is returned by CheckDigest when content does not match
// its pin. It matches ErrDigestMismatch with errors.Is.
type DigestMismatchError struct {
	// Expected is the pinned digest, Got the digest of the content; both
	// "sha256:<hex>".
	Expected, Got string
}

func (e *DigestMismatchError) Error() string {
	return fmt.Sprintf("module content has digest %s but spec.sha256 pins %s: "+
		"if the new content is intended, set spec.sha256 to %s; otherwise point the source at the pinned module",
		e.Got, e.Expected, hexOf(e.Got))
}

// Is makes errors.Is(err, ErrDigestMismatch) true.
func (e *DigestMismatchError) Is(target error) bool { return target == ErrDigestMismatch }
