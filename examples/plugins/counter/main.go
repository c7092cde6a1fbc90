//go:build wasip1

// Command counter is an example plugin that keeps a count in a host variable.
//
// README: increment adds one to the variable "count" and returns the new
// value as a decimal string ("1", "2", ...); reset removes the variable and
// returns "0". Variables belong to one plugin instance and last across its
// calls. It needs the vars permission.
package main

import (
	"strconv"

	"github.com/wasm-operator/wasm-operator/pdk"
)

//go:wasmexport increment
func increment() int32 {
	n := 0
	if v, ok := pdk.GetVar("count"); ok {
		var err error
		if n, err = strconv.Atoi(string(v)); err != nil {
			pdk.SetErrorString("variable count holds " + strconv.Quote(string(v)) + ", not a number")
			return 1
		}
	}
	n++
	s := strconv.Itoa(n)
	pdk.SetVar("count", []byte(s))
	pdk.OutputString(s)
	return 0
}

//go:wasmexport reset
func reset() int32 {
	pdk.RemoveVar("count")
	pdk.OutputString("0")
	return 0
}

func main() {}
