package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestInitCache: a root-owned 0755 folder, as a hostPath volume comes, is given to the manager's user, once;
// a file or a missing folder is refused with what to check.
func TestInitCache(t *testing.T) {
	uid, gid := 65532, 65532
	if os.Geteuid() != 0 { // only root may give a folder away; as anyone else, take it for oneself
		uid, gid = os.Getuid(), os.Getgid()
	}
	dir := filepath.Join(t.TempDir(), "cache")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	args := []string{"init-cache", "--cache-dir", dir, "--uid", strconv.Itoa(uid), "--gid", strconv.Itoa(gid)}
	out, errOut, code := runManager(t, "", args...)
	if code != 0 || !strings.Contains(out, "now owned by") {
		t.Fatalf("init-cache: exit %d\n%s%s", code, out, errOut)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if int(st.Uid) != uid || int(st.Gid) != gid || fi.Mode().Perm() != 0o775 {
		t.Errorf("after init-cache: owner %d:%d mode %o, want %d:%d 775", st.Uid, st.Gid, fi.Mode().Perm(), uid, gid)
	}
	if out, _, code := runManager(t, "", args...); code != 0 || !strings.Contains(out, "already owned") {
		t.Errorf("second init-cache: exit %d, %s; want nothing changed", code, out)
	}

	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{file: "is not a folder", filepath.Join(dir, "missing"): "is the cache volume mounted at --cache-dir?"} {
		if _, errOut, code := runManager(t, "", "init-cache", "--cache-dir", path); code != 1 || !strings.Contains(errOut, want) {
			t.Errorf("init-cache --cache-dir %s: exit %d, %q; want 1 and %q", path, code, errOut, want)
		}
	}
}
