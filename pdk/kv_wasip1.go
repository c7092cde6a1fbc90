//go:build wasip1

package pdk

import (
	"encoding/json"
	"errors"
	"time"
)

// The key-value store's host functions: user host functions of our host,
// granted by permissions.kv. Arguments stay the plugin's blocks; the pdk frees
// them after each call.

//go:wasmimport extism:host/user kv_get
func hostKVGet(keyOffset uint64) uint64

//go:wasmimport extism:host/user kv_set
func hostKVSet(keyOffset, valueOffset, ttlMillis uint64)

//go:wasmimport extism:host/user kv_delete
func hostKVDelete(keyOffset uint64)

//go:wasmimport extism:host/user kv_list
func hostKVList(prefixOffset uint64) uint64

// KVGet returns the value of key in the plugin's key-value store and whether
// it is set. The store is shared by all the plugin's instances: on one node
// (scope Node) or in the whole cluster (scope Cluster).
func KVGet(key string) ([]byte, bool) {
	k := allocString(key)
	v := hostKVGet(k)
	freeBlock(k)
	if v == 0 {
		return nil, false
	}
	return takeBlock(v), true
}

// KVSet sets key to a copy of value, with the store's default time to live.
// An empty value removes the key: the ABI has no empty values. A value the
// store cannot hold (over permissions.kv.maxBytes) or a store that cannot be
// reached stops the call with an error saying why.
func KVSet(key string, value []byte) {
	kvSet(key, value, 0)
}

// KVSetTTL is KVSet with a time to live, rounded up to whole milliseconds.
func KVSetTTL(key string, value []byte, ttl time.Duration) {
	ms := uint64((ttl + time.Millisecond - 1) / time.Millisecond)
	if ttl <= 0 {
		ms = 0
	}
	kvSet(key, value, ms)
}

func kvSet(key string, value []byte, ttlMillis uint64) {
	k, v := allocString(key), allocBytes(value)
	hostKVSet(k, v, ttlMillis)
	freeBlock(v)
	freeBlock(k)
}

// KVDelete removes key; removing an unset key is a no-op.
func KVDelete(key string) {
	k := allocString(key)
	hostKVDelete(k)
	freeBlock(k)
}

// KVList returns the keys that start with prefix (all keys for ""), sorted,
// at most permissions.kv.maxKeys of them.
func KVList(prefix string) ([]string, error) {
	p := allocString(prefix)
	h := hostKVList(p)
	freeBlock(p)
	if h == 0 {
		return nil, nil
	}
	var keys []string
	if err := json.Unmarshal(takeBlock(h), &keys); err != nil {
		return nil, errors.New("pdk: key list from host: " + err.Error())
	}
	return keys, nil
}

func freeBlock(offset uint64) {
	if offset != 0 {
		hostFree(offset)
	}
}
