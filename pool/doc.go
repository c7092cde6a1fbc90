// Package pool keeps reusable instances of a value that is costly to create, such as an
// instantiated WebAssembly module, and bounds how many are in use at once.
//
// A Pool hands out instances with Get and takes them back with Put, or with Discard when an
// instance can no longer be trusted. Get waits for a free slot up to an acquire timeout and then
// returns ErrSaturated, which a server answers with 429 Too Many Requests. Idle instances expire
// after IdleTTL, Prewarm keeps some ready, MaxUses recycles instances after a number of uses, and
// Drain lets in-flight work finish before everything is closed, as when a plugin is swapped for a
// new version. Every instance the pool creates is closed exactly once.
//
// The package knows nothing of what it pools: callers supply the New and Close functions.
package pool
