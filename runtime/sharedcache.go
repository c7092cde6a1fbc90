package runtime

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// seedCompiled links into the node-local compiled cache (local) the entries of the shared one (shared,
// mounted read-only) that local lacks, so wazero finds there what the controller compiled, while
// whatever this process compiles itself lands in local only. A link costs the node-local volume an
// inode, not a copy of the entry (copies of every module of the cluster filled an emptyDir's size
// limit). Only regular files are linked (no symlinks, no FIFOs); wazero opens an entry to read it and
// removes a corrupt one, which removes the link and leaves the shared file alone. wazero keeps its
// entries one folder down (wazero-<version>-<arch>-<os>), so folders are walked to that depth.
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
		src, err := filepath.Abs(filepath.Join(shared, de.Name()))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if fi, err := os.Lstat(dst); err == nil {
			if fi.Mode()&fs.ModeSymlink == 0 {
				continue // compiled here
			}
			if target, err := os.Readlink(dst); err == nil && target == src {
				continue
			}
			// A link left by another mount path of the shared cache (a hostPath compile cache
			// outlives the pod): link again.
			if err := os.Remove(dst); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		err = os.Symlink(src, dst)
		if err != nil && !errors.Is(err, fs.ErrExist) {
			errs = append(errs, fmt.Errorf("link compiled entry: %w", err))
		}
	}
	return errors.Join(errs...)
}
