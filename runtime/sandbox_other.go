//go:build !linux

package runtime

import "errors"

// sandbox confines nothing outside Linux.
func sandbox() error { return nil }

// SandboxAvailable says compiles are not confined outside Linux.
func SandboxAvailable() error {
	return errors.New("compile processes run unconfined outside Linux")
}
