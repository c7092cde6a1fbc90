//go:build wasip1

// Command shared-counter is an example plugin that keeps counters in the
// host's key-value store, so every instance of the plugin (on one node with
// scope Node, in the whole cluster with scope Cluster) counts together.
//
// README: increment adds one to the counter named by the input ("count" when
// the input is empty) and returns its new value ("1", "2", ...); get returns
// it ("0" when unset); reset removes it and returns "0"; counters returns the
// names of the counters set, as a JSON array. remember stores the input under
// the key "note", which recall returns; ping returns "pong" without using the
// store. A read and the write after it are two
// steps: calls racing on one counter may count once for two. It needs the kv
// permission.
package main

import (
	"strconv"

	"github.com/wasm-operator/wasm-operator/pdk"
)

const prefix = "counter/"

func counterKey() string {
	name := pdk.InputString()
	if name == "" {
		name = "count"
	}
	return prefix + name
}

func read(key string) (int, bool) {
	v, ok := pdk.KVGet(key)
	if !ok {
		return 0, true
	}
	n, err := strconv.Atoi(string(v))
	if err != nil {
		pdk.SetErrorString(key + " holds " + strconv.Quote(string(v)) + ", not a number")
		return 0, false
	}
	return n, true
}

//go:wasmexport increment
func increment() int32 {
	key := counterKey()
	n, ok := read(key)
	if !ok {
		return 1
	}
	s := strconv.Itoa(n + 1)
	pdk.KVSet(key, []byte(s))
	pdk.OutputString(s)
	return 0
}

//go:wasmexport get
func get() int32 {
	n, ok := read(counterKey())
	if !ok {
		return 1
	}
	pdk.OutputString(strconv.Itoa(n))
	return 0
}

//go:wasmexport reset
func reset() int32 {
	pdk.KVDelete(counterKey())
	pdk.OutputString("0")
	return 0
}

//go:wasmexport counters
func counters() int32 {
	keys, err := pdk.KVList(prefix)
	if err != nil {
		pdk.SetError(err)
		return 1
	}
	names := make([]string, 0, len(keys))
	for _, k := range keys {
		names = append(names, k[len(prefix):])
	}
	if err := pdk.OutputJSON(names); err != nil {
		pdk.SetError(err)
		return 1
	}
	return 0
}

//go:wasmexport remember
func remember() int32 {
	pdk.KVSet("note", pdk.Input())
	return 0
}

//go:wasmexport recall
func recall() int32 {
	v, _ := pdk.KVGet("note")
	pdk.Output(v)
	return 0
}

//go:wasmexport ping
func ping() int32 {
	pdk.OutputString("pong")
	return 0
}

func main() {}
