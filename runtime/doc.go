// Package runtime runs Extism plugins on wazero, under the permissions and limits of a
// WasmPlugin.
//
// An Engine holds one wazero runtime, with the Extism kernel (host module extism:host/env)
// implemented natively in Go and WASI without a filesystem. It compiles modules, at most
// MaxConcurrentCompiles at once, into a file cache shared by every process that mounts the same
// folder, and shares compilations of identical bytes in memory.
//
// A Plugin is a compiled module with what it is granted: host services exist for it only when its
// Permissions say so, and a module importing one that is not granted is refused when it is loaded,
// with an *ImportError naming the permission to grant. Limits bound memory, call time, input and
// output. Plugins make Instances; an Instance serves one call at a time and keeps its memory and
// vars across calls, as in Extism, so it is worth pooling. An instance whose Err is not nil
// trapped, was stopped or went over a limit, and must be closed instead of reused.
//
// Services of our own are user host functions in extism:host/user: the key-value store (KV, with a
// KVStore shared by a plugin's instances) is the first.
//
// Plugins built with any Extism PDK run unchanged; the conformance test runs the Extism Go SDK's
// own test plugins on both side by side.
//
//	engine, _ := runtime.NewEngine(ctx, runtime.EngineConfig{CacheDir: "/var/cache/wasm-operator"})
//	plugin, err := engine.Load(ctx, wasm, runtime.PluginConfig{
//		Name:        "default/greet",
//		Config:      map[string]string{"greeting": "Howdy"},
//		Permissions: runtime.Permissions{Log: &runtime.Log{Level: runtime.LogInfo}},
//		Limits:      runtime.Limits{MaxMemoryBytes: 64 << 20, CallTimeout: 5 * time.Second},
//	})
//	inst, _ := plugin.NewInstance(ctx)
//	out, rc, err := inst.Call(ctx, "greet", []byte("John"))
package runtime
