//go:build wasip1

// Command greet is an example plugin that greets its input.
//
// README: greet returns "<greeting>, <input>!", where greeting is the plugin
// configuration key "greeting" (default "Hello"); it needs no permissions.
//
// Build it as a WASI reactor:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o greet.wasm .
package main

import "github.com/wasm-operator/wasm-operator/pdk"

//go:wasmexport greet
func greet() int32 {
	greeting, ok := pdk.Config("greeting")
	if !ok {
		greeting = "Hello"
	}
	pdk.OutputString(greeting + ", " + pdk.InputString() + "!")
	return 0
}

func main() {}
