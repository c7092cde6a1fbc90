package runtime

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// maxSharedEntryBytes bounds one compiled entry copied from the shared cache.
const maxSharedEntryBytes = 1 << 30

// seedCompiled copies into the node-local compiled cache (local) the entries of the shared one
// (shared, mounted read-only) that local lacks, so wazero finds there what the controller compiled,
// while whatever this process compiles itself lands in local only. Only regular files are copied
// (no symlinks, no FIFOs), each written to a temporary file and renamed into place. wazero keeps
// its entries one folder down (wazero-<version>-<arch>-<os>), so folders are walked to that depth.
func seedCompiled(shared, local string) error { return seedDir(shared, local, 1) }

func seedDir(shared, local string, depth int) error {
	des, err := os.ReadDir(shared)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // nothing compiled there yet
	}
	if err != nil {
		return fmt.Errorf("read the shared compile cache: %w", err)
	}
	var errs []error
	for _, de := range des {
		if de.IsDir() && depth > 0 {
			sub := filepath.Join(local, de.Name())
			if err := os.MkdirAll(sub, 0o755); err != nil {
				errs = append(errs, err)
				continue
			}
			errs = append(errs, seedDir(filepath.Join(shared, de.Name()), sub, depth-1))
			continue
		}
		if !de.Type().IsRegular() {
			continue
		}
		dst := filepath.Join(local, de.Name())
		if _, err := os.Lstat(dst); err == nil {
			continue
		}
		if err := copyEntry(filepath.Join(shared, de.Name()), dst); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func copyEntry(src, dst string) error {
	in, err := os.OpenFile(src, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("copy compiled entry: %w", err)
	}
	defer in.Close()
	if fi, err := in.Stat(); err != nil || !fi.Mode().IsRegular() || fi.Size() > maxSharedEntryBytes {
		return fmt.Errorf("copy compiled entry %s: not a regular file of at most %d bytes", src, maxSharedEntryBytes)
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".seed-*")
	if err != nil {
		return fmt.Errorf("copy compiled entry: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, io.LimitReader(in, maxSharedEntryBytes)); err != nil {
		tmp.Close()
		return fmt.Errorf("copy compiled entry %s: %w", src, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("copy compiled entry: %w", err)
	}
	return os.Rename(tmp.Name(), dst)
}
