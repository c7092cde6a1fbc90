// Package kv holds the key-value stores behind a plugin's permissions.kv: Memory for the Node scope (one
// store per plugin per host, in memory, with TTLs, size limits and least-recently-used eviction; Node
// keeps them) and Redis for the Cluster scope (one store per plugin in the operator's Redis, keys under
// "<prefix>:{<namespace>/<name>}:"). Both offer Get, Set (with a TTL), Delete and List by prefix and
// enforce Limits; the runtime calls them from the kv_* host functions.
//
//	var node kv.Node
//	s := node.Store("default/counter", kv.Limits{MaxBytes: 1 << 20, MaxKeys: 1024})
//	_ = s.Set(ctx, "count", []byte("1"), time.Minute)
//	v, ok, _ := s.Get(ctx, "count")
package kv
