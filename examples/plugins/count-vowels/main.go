//go:build wasip1

// Command count-vowels is an example plugin that counts vowels and returns
// JSON, in the shape of Extism's count_vowels plugin.
//
// README: count_vowels returns {"count":N,"total":T,"vowels":"aeiouAEIOU"},
// where N is the number of vowels in the input and T the running total over
// the calls of this plugin instance (kept in guest memory); it needs no
// permissions.
package main

import (
	"strconv"

	"github.com/wasm-operator/wasm-operator/pdk"
)

// total lives in guest memory, which the host keeps across calls of one
// instance and discards with it.
var total int

//go:wasmexport count_vowels
func countVowels() int32 {
	count := 0
	for _, c := range pdk.Input() {
		switch c {
		case 'a', 'e', 'i', 'o', 'u', 'A', 'E', 'I', 'O', 'U':
			count++
		}
	}
	total += count

	// Encoded by hand: field order and spacing match the Extism plugin's
	// output byte for byte, and the module does without encoding/json.
	out := make([]byte, 0, 64)
	out = append(out, `{"count":`...)
	out = strconv.AppendInt(out, int64(count), 10)
	out = append(out, `,"total":`...)
	out = strconv.AppendInt(out, int64(total), 10)
	out = append(out, `,"vowels":"aeiouAEIOU"}`...)
	pdk.Output(out)
	return 0
}

func main() {}
