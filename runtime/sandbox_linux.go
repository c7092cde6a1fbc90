package runtime

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/landlock-lsm/go-landlock/landlock"
	llsyscall "github.com/landlock-lsm/go-landlock/landlock/syscall"
)

// sandbox confines this process with Landlock: it may read every file, write only under dir, and
// neither bind nor connect TCP sockets. Where the kernel has no Landlock (before 5.13, or a seccomp
// profile that refuses its calls) the compile runs unconfined, checked all the same by the parent
// (checkStaged); SandboxAvailable says which.
func sandbox(dir string) error {
	err := landlock.V5.BestEffort().Restrict(landlock.RODirs("/"), landlock.RWDirs(dir))
	if err != nil && (errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.ENOSYS) || errors.Is(err, syscall.EOPNOTSUPP)) {
		return nil // no Landlock here: SandboxAvailable reports it
	}
	if err != nil {
		return fmt.Errorf("confine the compile process: %w", err)
	}
	return nil
}

// SandboxAvailable is nil when compile processes are confined (Landlock with file system and network
// rules, kernel 6.7 or later), else why not; a program logs it at start.
func SandboxAvailable() error {
	abi, err := llsyscall.LandlockGetABIVersion()
	switch {
	case err != nil:
		return fmt.Errorf("compile processes run unconfined: this kernel or its seccomp profile offers no Landlock (%v); what they write is checked all the same", err)
	case abi < 4:
		return fmt.Errorf("compile processes are confined for files only: this kernel's Landlock (ABI %d) has no network rules (6.7 or later does)", abi)
	}
	return nil
}
