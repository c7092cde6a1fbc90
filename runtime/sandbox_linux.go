package runtime

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/landlock-lsm/go-landlock/landlock"
	llsyscall "github.com/landlock-lsm/go-landlock/landlock/syscall"
)

// sandbox confines this process with Landlock, as far as the kernel's Landlock goes (best effort,
// newest rules first): it opens no file, binds and connects no TCP socket, signals no process outside
// itself and reaches no abstract unix socket; files it has open (stdin, stderr) it keeps. Where the
// kernel or its seccomp profile refuses Landlock altogether the compile runs unconfined, as
// SandboxAvailable reports at start.
func sandbox() error {
	err := landlock.V11.BestEffort().Restrict()
	if err != nil && (errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.ENOSYS) || errors.Is(err, syscall.EOPNOTSUPP)) {
		return nil // refused by a seccomp profile: SandboxAvailable reports it
	}
	if err != nil {
		return fmt.Errorf("confine the compile process: %w", err)
	}
	return nil
}

// SandboxAvailable is nil when compile processes are fully confined (Landlock ABI 6, kernel 6.12, or
// later: files, TCP, signals), else how far they are.
func SandboxAvailable() error {
	abi, err := llsyscall.LandlockGetABIVersion()
	switch {
	case err != nil:
		return fmt.Errorf("compile processes run unconfined: this kernel or its seccomp profile offers no Landlock (%v); "+
			"a compiler bug a module finds could write the compiled cache", err)
	case abi < 4:
		return fmt.Errorf("compile processes are confined for files only: this kernel's Landlock (ABI %d) has no network rules (kernel 6.7)", abi)
	case abi < 6:
		return fmt.Errorf("compile processes are confined for files and TCP: this kernel's Landlock (ABI %d) does not scope signals (kernel 6.12)", abi)
	}
	return nil
}
