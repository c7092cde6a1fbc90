package store_test

import (
	"fmt"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wasm-operator/wasm-operator/internal/store"
)

func Example() {
	root, _ := os.MkdirTemp("", "cache")
	defer os.RemoveAll(root)

	s, err := store.Open(root, store.Options{Registerer: prometheus.NewRegistry()})
	if err != nil {
		fmt.Println(err)
		return
	}
	e, _ := s.Put([]byte("\x00asm\x01\x00\x00\x00"))
	rel, _ := store.RelPath(e.Digest)
	fmt.Println(rel)

	data, err := s.Get(e.Digest) // a host loading the module
	fmt.Println(len(data), err)

	// The controller, periodically: keep what WasmPlugins reference, drop the
	// rest after a day, and keep the cache under 10 GiB.
	res, _ := s.GC(store.GCPolicy{Referenced: []string{e.Digest}, Grace: 24 * time.Hour, MaxBytes: 10 << 30})
	fmt.Println(res.Entries, len(res.Removed))
	// Output:
	// modules/sha256/93a44bbb96c751218e4c00d479e4c14358122a389acca16205b1e4d0dc5f9476.wasm
	// 8 <nil>
	// 1 0
}
