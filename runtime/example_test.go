package runtime_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/wasm-operator/wasm-operator/internal/testplugins"
	"github.com/wasm-operator/wasm-operator/runtime"
)

// greetWasm builds the greet example plugin and returns its path.
func greetWasm() string {
	root, _ := testplugins.RepoRoot()
	path, _ := testplugins.BuildTo(filepath.Join(root, testplugins.CacheDir), "greet")
	return path
}

func Example() {
	ctx := context.Background()
	wasm, err := os.ReadFile(greetWasm())
	if err != nil {
		fmt.Println(err)
		return
	}
	engine, err := runtime.NewEngine(ctx, runtime.EngineConfig{}) // CacheDir: "" keeps compiled code in memory
	if err != nil {
		fmt.Println(err)
		return
	}
	defer engine.Close(ctx)

	plugin, err := engine.Load(ctx, wasm, runtime.PluginConfig{
		Name:   "default/greet",
		Config: map[string]string{"greeting": "Howdy"},
		Limits: runtime.Limits{MaxMemoryBytes: 64 << 20, CallTimeout: 5 * time.Second},
	})
	var missing *runtime.ImportError
	if errors.As(err, &missing) {
		fmt.Println("grant", missing.Permission) // e.g. permissions.http
		return
	} else if err != nil {
		fmt.Println(err)
		return
	}
	defer plugin.Close(ctx)

	inst, err := plugin.NewInstance(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer inst.Close(ctx)
	out, rc, err := inst.Call(ctx, "greet", []byte("John"))
	fmt.Printf("%s rc=%d err=%v reusable=%v\n", out, rc, err, inst.Err() == nil)
	// Output: Howdy, John! rc=0 err=<nil> reusable=true
}
