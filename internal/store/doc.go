// Package store keeps WebAssembly modules by digest on the cache folder that
// the controller and every node host share:
//
//	<root>/modules/sha256/<hex>.wasm
//
// Put writes atomically (temporary file, fsync, rename, fsync of the folder),
// so any number of goroutines and processes may store the same module at
// once. Get verifies the content against its digest and removes a corrupt file
// so it can be stored again. A module's modification time records its last
// use; GC removes unreferenced modules after a grace period and enforces a size
// cap by evicting the least recently used unreferenced modules first.
package store
