// Package pdk is the Go guest library for writing wasm-operator plugins.
//
// Plugins are Extism plugins: they import the host module "extism:host/env"
// and exchange data with the host through the Extism kernel, a memory the
// host owns apart from the plugin's own linear memory. This package hides
// that: a function reads its input with [Input], writes its result with
// [Output] and reports a failure with [SetError], and it reads configuration,
// keeps variables, makes HTTP requests, logs, and uses the plugin's key-value
// store ([KVGet], [KVSet], [KVList], imported from "extism:host/user", granted
// by permissions.kv) through the host.
//
// A plugin is a WASI reactor built with the standard Go toolchain (Go 1.24 or
// later):
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o plugin.wasm .
//
// Each callable function is a //go:wasmexport function without parameters
// that returns an int32: 0 for success, anything else for failure (with the
// reason given to [SetError]):
//
//	//go:wasmexport greet
//	func greet() int32 {
//		greeting, ok := pdk.Config("greeting")
//		if !ok {
//			greeting = "Hello"
//		}
//		pdk.OutputString(greeting + ", " + pdk.InputString() + "!")
//		return 0
//	}
//
//	func main() {}
//
// The Go linker keeps only the host imports a plugin uses, so a plugin that
// never calls [HTTPRequest.Send] does not import http_request and needs no
// HTTP permission. The functions that talk to the host exist only when
// building for wasip1; the types and encoders in this package build
// everywhere, so tools and tests on the host can use them.
//
// Kernel memory is reset by the host before every call. Values read from the
// host are copied into Go memory, so they stay valid after the call returns.
// Nothing in this package is safe for concurrent use; a plugin instance
// serves one call at a time.
package pdk
