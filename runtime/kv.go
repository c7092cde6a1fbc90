package runtime

import (
	"context"
	"fmt"
	"math"
	"time"
	"unicode/utf8"

	"github.com/tetratelabs/wazero/api"

	"github.com/wasm-operator/wasm-operator/internal/jsonstr"
)

// UserModule is the host module of the services of our own, which Extism PDKs import as user host
// functions.
const UserModule = "extism:host/user"

const permKV = "permissions.kv"

// MaxKVKeyBytes bounds a key-value key.
const MaxKVKeyBytes = 1024

// maxKVTTL keeps a TTL given in milliseconds within time.Duration.
const maxKVTTL = 100 * 365 * 24 * time.Hour

// KVStore is the store behind a plugin's kv_* functions, shared by all its instances (internal/kv has
// the in-memory and Redis ones). It enforces the store-wide limits; the runtime checks what it can
// before calling it. Its methods are called during plugin calls, with the call's context: a call that
// times out stops waiting.
type KVStore interface {
	// Get returns the value of key and whether it is set.
	Get(ctx context.Context, key string) ([]byte, bool, error)
	// Set sets key to value for ttl (0: no expiry).
	Set(ctx context.Context, key string, value []byte, ttl time.Duration) error
	// Delete removes key; an absent key is not an error.
	Delete(ctx context.Context, key string) error
	// List returns the keys starting with prefix, sorted, at most limit.
	List(ctx context.Context, prefix string, limit int) ([]string, error)
}

// KVBoundedGetter is a KVStore that can refuse a value larger than max without copying it, so that a
// kv_get over the instance's memory budget costs no Go memory outside it. The stores of internal/kv are
// ones; kv_get falls back to Get for others.
type KVBoundedGetter interface {
	// GetAtMost returns the value of key, whether it is set and its length, like Get; when the value is
	// longer than max bytes it returns no value and a length of at least max+1.
	GetAtMost(ctx context.Context, key string, max int64) ([]byte, bool, int64, error)
}

// KV grants the key-value functions of extism:host/user:
//
//	kv_get(key i64) -> i64             the value's handle, 0 when the key is not set
//	kv_set(key i64, value i64, ttl_ms i64)   value 0 deletes; ttl_ms 0 means DefaultTTL
//	kv_delete(key i64)
//	kv_list(prefix i64) -> i64         a JSON array of the keys with that prefix, sorted; 0 when none
//
// Arguments are kernel memory handles the guest owns (the host does not free them); results are new
// blocks, charged to the instance's memory, for the guest to read and free. A key is 1 to MaxKVKeyBytes
// bytes of UTF-8 (so that kv_list can return it as JSON); a value is any bytes. A failing store (a value over the limits, Redis down) fails the call with an error that says
// why; the instance is then discarded.
type KV struct {
	// Store holds the entries. NewPlugin fails without one.
	Store KVStore
	// MaxBytes bounds one entry, key plus value, before the store is asked. Zero: no bound here.
	MaxBytes int64
	// MaxKeys bounds what kv_list returns. Zero: 1024.
	MaxKeys int
	// DefaultTTL applies to a kv_set without a TTL. Zero: no expiry.
	DefaultTTL time.Duration
}

// userFault is the panic value of a user host function that refuses a guest's request.
type userFault struct {
	fn    string
	msg   string
	cause error
}

func (f *userFault) Error() string { return UserModule + "." + f.fn + ": " + f.msg }
func (f *userFault) Unwrap() error { return f.cause }

func kvFault(fn string, err error, format string, args ...any) {
	panic(&userFault{fn: fn, msg: fmt.Sprintf(format, args...), cause: err})
}

var userFuncs = []hostFunc{
	{"kv_get", permKV, types(i64), types(i64), kvGet},
	{"kv_set", permKV, types(i64, i64, i64), nil, kvSet},
	{"kv_delete", permKV, types(i64), nil, kvDelete},
	{"kv_list", permKV, types(i64), types(i64), kvList},
}

// checkKV is NewPlugin's check of a KV grant.
func checkKV(k *KV) error {
	if k != nil && k.Store == nil {
		return fmt.Errorf("%s is granted but no key-value store is configured for it", permKV)
	}
	return nil
}

// kvOf returns the instance's grant and a key read from handle h.
func kvOf(ctx context.Context, fn string, h uint64, allowEmpty bool) (*Instance, *KV, string) {
	i := instanceOf(ctx)
	perm := i.plugin.perms.KV
	if perm == nil {
		kvFault(fn, nil, "the key-value store is not granted (%s)", permKV)
	}
	key := i.k.bytes(fn, h)
	if len(key) == 0 && !allowEmpty {
		kvFault(fn, nil, "empty key: a key is 1 to %d bytes", MaxKVKeyBytes)
	}
	if len(key) > MaxKVKeyBytes {
		kvFault(fn, nil, "key of %d bytes, more than %d", len(key), MaxKVKeyBytes)
	}
	if !utf8.Valid(key) {
		kvFault(fn, nil, "key %q is not UTF-8", key)
	}
	return i, perm, string(key)
}

func kvGet(ctx context.Context, _ api.Module, s []uint64) {
	i, perm, key := kvOf(ctx, "kv_get", s[0], false)
	var v []byte
	var ok bool
	var err error
	if b, bounded := perm.Store.(KVBoundedGetter); bounded {
		left := min(i.budget.left(), math.MaxInt64)
		var n int64
		if v, ok, n, err = b.GetAtMost(ctx, key, int64(left)); n > int64(left) {
			kvFault("kv_get", nil, "out of memory: the value of %q takes %d bytes, more than the %d left of the instance's budget (limits.maxMemory)", key, n, left)
		}
	} else {
		v, ok, err = perm.Store.Get(ctx, key)
	}
	if err != nil {
		kvFault("kv_get", err, "%v", err)
	}
	if !ok || len(v) == 0 {
		s[0] = 0
		return
	}
	s[0] = i.k.put("kv_get", v)
}

func kvSet(ctx context.Context, _ api.Module, s []uint64) {
	i, perm, key := kvOf(ctx, "kv_set", s[0], false)
	if s[1] == 0 {
		if err := perm.Store.Delete(ctx, key); err != nil {
			kvFault("kv_set", err, "%v", err)
		}
		return
	}
	value := i.k.bytes("kv_set", s[1])
	if n := int64(len(key) + len(value)); perm.MaxBytes > 0 && n > perm.MaxBytes {
		kvFault("kv_set", nil, "key and value take %d bytes, more than the limit of %d (%s.maxBytes)", n, perm.MaxBytes, permKV)
	}
	ttl := perm.DefaultTTL
	if ms := s[2]; ms != 0 {
		if ms > uint64(maxKVTTL/time.Millisecond) {
			kvFault("kv_set", nil, "TTL of %d ms is negative or longer than 100 years", int64(ms))
		}
		ttl = time.Duration(ms) * time.Millisecond
	}
	if err := perm.Store.Set(ctx, key, value, ttl); err != nil {
		kvFault("kv_set", err, "%v", err)
	}
}

func kvDelete(ctx context.Context, _ api.Module, s []uint64) {
	_, perm, key := kvOf(ctx, "kv_delete", s[0], false)
	if err := perm.Store.Delete(ctx, key); err != nil {
		kvFault("kv_delete", err, "%v", err)
	}
}

func kvList(ctx context.Context, _ api.Module, s []uint64) {
	i, perm, prefix := kvOf(ctx, "kv_list", s[0], true)
	limit := perm.MaxKeys
	if limit <= 0 {
		limit = 1024
	}
	keys, err := perm.Store.List(ctx, prefix, limit)
	if err != nil {
		kvFault("kv_list", err, "%v", err)
	}
	if len(keys) == 0 {
		s[0] = 0
		return
	}
	s[0] = putJSONList(&i.k, "kv_list", keys)
}

// putJSONList writes keys as a JSON array of strings into a kernel block and returns its handle. The
// block is sized and charged to the instance before anything is encoded, and keys are encoded straight
// into it, with no buffer of Go memory: JSON escapes can make the list six times its keys, which must
// never be held outside the budget (encoding/json's encoder buffers each string, and under the race
// detector its buffer pool keeps nothing). Keys are valid UTF-8 (kvOf checks), so only quotes,
// backslashes and control characters need escapes.
func putJSONList(k *kernel, fn string, keys []string) uint64 {
	n := uint64(1) // "[" or a comma before each key, then "]"
	for _, key := range keys {
		n += uint64(jsonstr.Len(key)) + 1
	}
	if len(keys) == 0 {
		n++
	}
	h := k.alloc(n)
	if h == 0 {
		fault(fn, "out of memory: cannot allocate %d bytes of kernel memory for %d keys", n, len(keys))
	}
	dst := k.mem[h-arenaBase : h-arenaBase : h-arenaBase+n]
	dst = append(dst, '[')
	for i, key := range keys {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = jsonstr.Append(dst, key)
	}
	_ = append(dst, ']') // within the block's capacity: n counted every byte
	return h
}
