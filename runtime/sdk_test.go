package runtime

import (
	"os/exec"
	"strings"
	"sync"
	"testing"
)

var (
	sdkDirOnce sync.Once
	sdkDirPath string
	sdkDirErr  error
)

// sdkDir returns the Extism Go SDK's module folder, whose wasm/ folder is the conformance corpus.
func sdkDir(tb testing.TB) string {
	sdkDirOnce.Do(func() {
		out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/extism/go-sdk").Output()
		sdkDirPath, sdkDirErr = strings.TrimSpace(string(out)), err
	})
	if sdkDirErr != nil || sdkDirPath == "" {
		tb.Fatalf("locate github.com/extism/go-sdk (run go mod download): %v", sdkDirErr)
	}
	return sdkDirPath
}
