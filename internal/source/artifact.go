package source

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
)

// DefaultMaxBytes is the size cap applied when an option's MaxBytes is zero.
const DefaultMaxBytes int64 = 256 << 20

// wasmMagic starts every WebAssembly binary module.
var wasmMagic = []byte("\x00asm")

// Artifact is a fetched module.
type Artifact struct {
	// Data is the module's bytes.
	Data []byte
	// Source is the resolved identity of what was fetched: the URL
	// (password redacted), the image as repository@sha256:<manifest digest>,
	// or configmap:<namespace/name>#<key>.
	Source string
	// Digest is "sha256:<hex>" of Data.
	Digest string
}

func newArtifact(data []byte, source string) *Artifact {
	sum := sha256.Sum256(data)
	return &Artifact{Data: data, Source: source, Digest: "sha256:" + hex.EncodeToString(sum[:])}
}

// NormalizeDigest accepts a sha256 digest as 64 hex digits, with or without
// the "sha256:" prefix, and returns it as "sha256:<64 lowercase hex>".
func NormalizeDigest(s string) (string, error) {
	h := strings.TrimPrefix(s, "sha256:")
	if len(h) != 64 {
		return "", fmt.Errorf("%w: digest %q must be 64 hex digits, optionally prefixed with \"sha256:\"", ErrInvalid, s)
	}
	h = strings.ToLower(h)
	if _, err := hex.DecodeString(h); err != nil {
		return "", fmt.Errorf("%w: digest %q must be 64 hex digits, optionally prefixed with \"sha256:\"", ErrInvalid, s)
	}
	return "sha256:" + h, nil
}

// CheckDigest compares the digest of fetched content with a pin. Both may be
// given as bare hex or "sha256:<hex>". An empty pin accepts anything. A
// mismatch returns a *DigestMismatchError; a malformed digest an error
// matching ErrInvalid.
func CheckDigest(pin, got string) error {
	if pin == "" {
		return nil
	}
	want, err := NormalizeDigest(pin)
	if err != nil {
		return fmt.Errorf("check pin: %w", err)
	}
	have, err := NormalizeDigest(got)
	if err != nil {
		return fmt.Errorf("check pin: %w", err)
	}
	if want != have {
		return &DigestMismatchError{Expected: want, Got: have}
	}
	return nil
}

func hexOf(d string) string { return strings.TrimPrefix(d, "sha256:") }

// checkWasm returns a message when data cannot be a WebAssembly binary.
func checkWasm(data []byte) (string, bool) {
	if bytes.HasPrefix(data, wasmMagic) {
		return "", true
	}
	if len(data) == 0 {
		return "content is empty, not a WebAssembly module", false
	}
	// At most 4 bytes, as hex: enough to tell HTML ("3c21444f") or gzip ("1f8b") from a module, too
	// little to copy a secret an internal endpoint answered with into the status.
	head := data[:min(len(data), 4)]
	return fmt.Sprintf("content is not a WebAssembly module (it starts with 0x%x, a module starts with 0x0061736d)", head), false
}
