package main

import (
	"flag"
	"fmt"
	"os"
	"syscall"
)

func init() {
	commands["init-cache"] = command{summary: "give the cache folder to the user the controller and hosts run as (the chart's init container)", run: runInitCache}
}

// runInitCache makes the cache folder's root owned by --uid:--gid and writable by its owner. The chart runs
// it as root, with CAP_CHOWN and CAP_FOWNER only, before the controller and the hosts start: fsGroup alone
// does not do it on volumes whose driver ignores fsGroup (hostPath, local, many NFS setups), and the
// non-root manager then cannot create modules/. Only the root folder is changed, and only when its owner
// or mode differ, as fsGroupChangePolicy OnRootMismatch would; what the controller writes below it is
// its own already.
func runInitCache(args []string) int {
	fs := flag.NewFlagSet("manager init-cache", flag.ContinueOnError)
	dir := fs.String("cache-dir", "/var/cache/wasm-operator", "root of the shared module cache")
	uid := fs.Int("uid", 65532, "user that must own the folder")
	gid := fs.Int("gid", 65532, "group that must own the folder")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	changed, err := initCache(*dir, *uid, *gid)
	if err != nil {
		fmt.Fprintf(os.Stderr, "manager init-cache: %v\n", err)
		return 1
	}
	if changed {
		fmt.Printf("cache folder %s now owned by %d:%d\n", *dir, *uid, *gid)
	} else {
		fmt.Printf("cache folder %s already owned by %d:%d\n", *dir, *uid, *gid)
	}
	return 0
}

// initCache gives dir to uid:gid with mode u+rwx, g+rwx (the fsGroup's), reporting whether it changed
// anything. dir must be a folder, not a link to one.
func initCache(dir string, uid, gid int) (bool, error) {
	fi, err := os.Lstat(dir)
	if err != nil {
		return false, fmt.Errorf("cache folder: %w (is the cache volume mounted at --cache-dir?)", err)
	}
	if !fi.IsDir() {
		return false, fmt.Errorf("cache folder %s is not a folder (%s)", dir, fi.Mode().Type())
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return false, fmt.Errorf("cache folder %s: no owner information on this system", dir)
	}
	changed := false
	if int(st.Uid) != uid || int(st.Gid) != gid {
		if err := os.Lchown(dir, uid, gid); err != nil {
			return false, fmt.Errorf("give the cache folder to %d:%d: %w (the init container needs CAP_CHOWN)", uid, gid, err)
		}
		changed = true
	}
	if mode := fi.Mode().Perm() | 0o770; mode != fi.Mode().Perm() {
		if err := os.Chmod(dir, mode|fi.Mode()&os.ModeSticky); err != nil {
			return false, fmt.Errorf("make the cache folder writable by its owner: %w", err)
		}
		changed = true
	}
	return changed, nil
}
