package runtime

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	goruntime "runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wasm-operator/wasm-operator/internal/kv"
	"github.com/wasm-operator/wasm-operator/internal/kv/redistest"
	"github.com/wasm-operator/wasm-operator/internal/testplugins"
)

func kvPlugin(t *testing.T, e *Engine, store KVStore, maxBytes int64) *Plugin {
	t.Helper()
	return loadFile(t, e, testplugins.Build(t, "shared-counter"), PluginConfig{
		Name:        "ns/shared-counter",
		Permissions: Permissions{KV: &KV{Store: store, MaxBytes: maxBytes, MaxKeys: 100}},
		Limits:      Limits{MaxMemoryBytes: 64 << 20, CallTimeout: 10 * time.Second},
	})
}

func mustCall(t *testing.T, i *Instance, fn, input, want string) {
	t.Helper()
	out, rc, err := i.Call(context.Background(), fn, []byte(input))
	if err != nil || rc != 0 || string(out) != want {
		t.Fatalf("%s(%q) = %q, rc %d, %v; want %q", fn, input, out, rc, err, want)
	}
}

// TestKVSharedByInstances: Node scope, one store for all instances of a plugin; a value set through one
// call is read by another call on another instance.
func TestKVSharedByInstances(t *testing.T) {
	e := newTestEngine(t)
	p := kvPlugin(t, e, kv.NewMemory(kv.Limits{MaxBytes: 1 << 20, MaxKeys: 100}), 1<<20)
	a, b := newInstance(t, p), newInstance(t, p)
	mustCall(t, a, "increment", "", "1")
	mustCall(t, b, "increment", "", "2")
	mustCall(t, a, "get", "", "2")
	mustCall(t, b, "increment", "hits", "1")
	mustCall(t, a, "counters", "", `["count","hits"]`)
	mustCall(t, a, "reset", "", "0")
	mustCall(t, b, "get", "", "0")
}

// TestKVClusterThroughRedis: Cluster scope, two engines (as two hosts) on one Redis see the same entries,
// and another plugin's entries stay apart.
func TestKVClusterThroughRedis(t *testing.T) {
	addr := redistest.Start(t)
	limits := kv.Limits{MaxBytes: 1 << 20, MaxKeys: 100}
	hostStore := func(plugin string) KVStore {
		r, err := kv.NewRedis(kv.RedisOptions{Address: addr})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		return r.Store(plugin, limits)
	}
	// Hosts share the compiled-code cache, as they do in a cluster.
	cache := t.TempDir()
	engine := func() *Engine { return newEngineWith(t, EngineConfig{CacheDir: cache}) }
	one := newInstance(t, kvPlugin(t, engine(), hostStore("ns/shared-counter"), 1<<20))
	two := newInstance(t, kvPlugin(t, engine(), hostStore("ns/shared-counter"), 1<<20))
	other := newInstance(t, kvPlugin(t, engine(), hostStore("ns/other"), 1<<20))
	mustCall(t, one, "increment", "", "1")
	mustCall(t, two, "increment", "", "2")
	mustCall(t, one, "get", "", "2")
	mustCall(t, two, "remember", "hello from host one", "")
	mustCall(t, one, "recall", "", "hello from host one")
	mustCall(t, other, "get", "", "0")
}

// TestKVValueOverMaxBytes: a value over maxBytes fails the guest's call with the limit named; the host,
// the store and other instances are unharmed.
func TestKVValueOverMaxBytes(t *testing.T) {
	e := newTestEngine(t)
	store := kv.NewMemory(kv.Limits{MaxBytes: 64, MaxKeys: 100})
	p := kvPlugin(t, e, store, 64)
	a := newInstance(t, p)
	mustCall(t, a, "remember", "small", "")
	_, rc, err := a.Call(context.Background(), "remember", []byte(strings.Repeat("x", 100)))
	if rc == 0 || err == nil || !strings.Contains(err.Error(), "extism:host/user.kv_set: key and value take 104 bytes, more than the limit of 64 (permissions.kv.maxBytes)") {
		t.Fatalf("remember(100 bytes) = rc %d, %v; want the call failed naming permissions.kv.maxBytes", rc, err)
	}
	if a.Err() == nil {
		t.Error("the failed instance is still offered for reuse")
	}
	b := newInstance(t, p)
	mustCall(t, b, "recall", "", "small")

	// The store's own check (a store smaller than the runtime's bound) fails the call the same way.
	p2 := kvPlugin(t, e, kv.NewMemory(kv.Limits{MaxBytes: 10, MaxKeys: 100}), 0)
	c := newInstance(t, p2)
	_, _, err = c.Call(context.Background(), "remember", []byte("0123456789"))
	if !errors.Is(err, kv.ErrTooLarge) || !strings.Contains(err.Error(), "permissions.kv.maxBytes") {
		t.Fatalf("store refusal = %v; want kv.ErrTooLarge naming permissions.kv.maxBytes", err)
	}
}

// TestKVRedisDown: with Redis gone, kv calls fail with a clear error and calls that do not use kv are
// served.
func TestKVRedisDown(t *testing.T) {
	srv := redistest.StartServer(t, redistest.Options{})
	r, _ := kv.NewRedis(kv.RedisOptions{Address: srv.Addr})
	defer r.Close()
	p := kvPlugin(t, newTestEngine(t), r.Store("ns/down", kv.Limits{MaxBytes: 1 << 10, MaxKeys: 10}), 0)
	mustCall(t, newInstance(t, p), "increment", "", "1")
	srv.Stop()
	_, rc, err := newInstance(t, p).Call(context.Background(), "increment", nil)
	if rc == 0 || !errors.Is(err, kv.ErrUnavailable) || !strings.Contains(err.Error(), "extism:host/user.kv_get: key-value store unavailable: redis at "+srv.Addr) {
		t.Fatalf("increment with Redis down = rc %d, %v; want a call error naming the store", rc, err)
	}
	mustCall(t, newInstance(t, p), "ping", "", "pong")
}

// A Redis that accepts connections and never answers holds a kv call no longer than the call: the
// caller's deadline reaches the store's socket (it waited out two 2 s read timeouts before).
func TestKVRedisSilentKeepsTheDeadline(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() }) // read nothing, answer nothing
		}
	}()
	r, _ := kv.NewRedis(kv.RedisOptions{Address: ln.Addr().String()})
	defer r.Close()
	p := kvPlugin(t, newTestEngine(t), r.Store("ns/silent", kv.Limits{MaxBytes: 1 << 10, MaxKeys: 10}), 0)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, rc, err := newInstance(t, p).Call(ctx, "increment", nil)
	if d := time.Since(start); rc == 0 || err == nil || d > time.Second {
		t.Fatalf("increment against a silent Redis with a 300ms deadline: rc %d, %v after %v", rc, err, d)
	}
}

func TestKVNeedsAStore(t *testing.T) {
	e := newTestEngine(t)
	wasm := testplugins.Build(t, "shared-counter")
	_, err := e.Load(context.Background(), mustRead(t, wasm), PluginConfig{Name: "ns/p", Permissions: Permissions{KV: &KV{}}})
	if err == nil || !strings.Contains(err.Error(), "permissions.kv is granted but no key-value store is configured") {
		t.Fatalf("load without a store = %v", err)
	}
}

// TestKVKeysAndTTL drives the host functions directly: bad keys are refused with a reason, a TTL in
// milliseconds reaches the store and the default TTL applies without one.
func TestKVKeysAndTTL(t *testing.T) {
	store := &recordingStore{Memory: kv.NewMemory(kv.Limits{MaxBytes: 1 << 20, MaxKeys: 10})}
	inst := fuzzInstance()
	inst.plugin.perms.KV = &KV{Store: store, MaxBytes: 1 << 20, MaxKeys: 10, DefaultTTL: time.Minute}
	ctx := &inst.cctx
	put := func(s string) uint64 { return inst.k.put("test", []byte(s)) }
	call := func(name string, args ...uint64) (stack []uint64, fault error) {
		stack = make([]uint64, 3)
		copy(stack, args)
		defer func() {
			if r := recover(); r != nil {
				fault = r.(error)
			}
		}()
		hostModules[UserModule].byName[name].fn(ctx, nil, stack)
		return stack, nil
	}
	if _, err := call("kv_set", put("k"), put("v"), 1500); err != nil || store.ttl != 1500*time.Millisecond {
		t.Fatalf("kv_set with 1500 ms: ttl %v, %v", store.ttl, err)
	}
	if _, err := call("kv_set", put("k"), put("v"), 0); err != nil || store.ttl != time.Minute {
		t.Fatalf("kv_set without a TTL: ttl %v, %v; want the default", store.ttl, err)
	}
	for _, c := range []struct {
		name string
		args []uint64
		want string
	}{
		{"kv_get", []uint64{0}, "kv_get: empty key"},
		{"kv_get", []uint64{put(strings.Repeat("k", MaxKVKeyBytes+1))}, "kv_get: key of 1025 bytes, more than 1024"},
		{"kv_set", []uint64{put("\xff"), put("v"), 0}, `kv_set: key "\xff" is not UTF-8`},
		{"kv_set", []uint64{put("k"), put("v"), 1 << 63}, "kv_set: TTL of -9223372036854775808 ms is negative or longer than 100 years"},
		{"kv_delete", []uint64{12345}, "is not the handle of an allocated block"},
	} {
		_, err := call(c.name, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v; want %q", c.name, err, c.want)
		}
	}
	st, err := call("kv_list", 0)
	if err != nil || string(inst.k.bytes("test", st[0])) != `["k"]` {
		t.Fatalf("kv_list = %v", err)
	}
}

// A kv_list whose JSON does not fit the instance's budget fails the guest's call before it is encoded
// (escapes make a list of control-character keys six times their size), and one that fits lists every key.
// callUser calls the host function fn of extism:host/user for inst as a guest would, returning the fault
// it raised, if any.
func callUser(inst *Instance, fn string, stack []uint64) (fault error) {
	defer func() {
		if r := recover(); r != nil {
			fault = r.(error)
		}
	}()
	hostModules[UserModule].byName[fn].fn(&inst.cctx, nil, stack)
	return nil
}

// leastAlloc runs f five times and returns the least Go memory one run allocated.
func leastAlloc(f func()) uint64 {
	least := uint64(math.MaxUint64)
	for range 5 {
		var before, after goruntime.MemStats
		goruntime.ReadMemStats(&before)
		f()
		goruntime.ReadMemStats(&after)
		least = min(least, after.TotalAlloc-before.TotalAlloc)
	}
	return least
}

// aloneChild marks the child process in which a test measuring allocations runs alone.
const aloneChild = "WASM_OPERATOR_TEST_ALONE"

// aloneInChild runs the calling test again in a child process of the test binary, alone, and reports
// whether this is that child: the parent returns false once the child passed. TotalAlloc counts the
// whole process, and goroutines of earlier tests (Redis clients, pools' reapers, wazero's) allocate too.
func aloneInChild(t *testing.T) bool {
	t.Helper()
	if os.Getenv(aloneChild) == t.Name() {
		return true
	}
	cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), aloneChild+"="+t.Name())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("measured alone: %v\n%s", err, out)
	}
	return false
}

// TestKVGetCharged: a value larger than what is left of the instance's budget fails kv_get without being
// copied into Go memory first, from the node store and from Redis.
func TestKVGetCharged(t *testing.T) {
	if !aloneInChild(t) {
		return
	}
	ctx := context.Background()
	big := bytes.Repeat([]byte("v"), 1<<20)
	stores := map[string]KVStore{"memory": kv.NewMemory(kv.Limits{MaxBytes: 4 << 20, MaxKeys: 10})}
	if addr := redistest.Start(t); addr != "" {
		r, err := kv.NewRedis(kv.RedisOptions{Address: addr})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		stores["redis"] = r.Store("ns/big", kv.Limits{MaxBytes: 4 << 20, MaxKeys: 10})
	}
	for name, store := range stores {
		t.Run(name, func(t *testing.T) {
			if err := store.Set(ctx, "big", big, 0); err != nil {
				t.Fatal(err)
			}
			get := func(budget int64) (int, error) {
				inst := fuzzInstance()
				inst.budget.max = uint64(budget)
				inst.plugin.perms.KV = &KV{Store: store, MaxBytes: 4 << 20, MaxKeys: 10}
				stack := []uint64{inst.k.put("test", []byte("big"))}
				if err := callUser(inst, "kv_get", stack); err != nil {
					return 0, err
				}
				return len(inst.k.bytes("test", stack[0])), nil
			}
			least := leastAlloc(func() {
				if _, err := get(64 << 10); err == nil || !strings.Contains(err.Error(), `kv_get: out of memory: the value of "big" takes `) {
					t.Fatalf("kv_get of 1Mi under 64Ki: %v", err)
				}
			})
			if least > 256<<10 {
				t.Errorf("the refused kv_get allocated %d bytes of Go memory outside the budget", least)
			}
			if n, err := get(4 << 20); err != nil || n != len(big) {
				t.Errorf("kv_get under 4Mi: %d bytes, %v", n, err)
			}
		})
	}
}

func TestKVListCharged(t *testing.T) {
	ctx := context.Background()
	store := kv.NewMemory(kv.Limits{MaxBytes: 1 << 20, MaxKeys: 100})
	var want []string
	for j := range 20 {
		key := fmt.Sprintf("%02d", j) + strings.Repeat("\x01", 1000)
		if err := store.Set(ctx, key, []byte("v"), 0); err != nil {
			t.Fatal(err)
		}
		want = append(want, key)
	}
	list := func(budget int64) (string, error) {
		inst := fuzzInstance()
		inst.budget.max = uint64(budget)
		inst.plugin.perms.KV = &KV{Store: store, MaxBytes: 1 << 20, MaxKeys: 100}
		stack := []uint64{0}
		if err := callUser(inst, "kv_list", stack); err != nil {
			return "", err
		}
		return string(inst.k.bytes("test", stack[0])), nil
	}
	// 20 keys of 1002 bytes are 20 KB; their JSON is about 120 KB, which the refused call never builds.
	// TotalAlloc counts the whole process, and goroutines left by earlier tests of this package (Redis
	// clients, pools' reapers, wazero's) allocate too: the measurement runs in a child process of the test
	// binary that runs this test alone, and takes the least of a few runs there.
	if !aloneInChild(t) {
		return
	}
	least := leastAlloc(func() {
		if _, err := list(64 << 10); err == nil || !strings.Contains(err.Error(), "kv_list: out of memory: cannot allocate 120") {
			t.Fatalf("kv_list under 64Ki: %v", err)
		}
	})
	if least > 60<<10 {
		t.Errorf("the refused kv_list allocated %d bytes of Go memory outside the budget", least)
	}
	var err error
	var out string
	out, err = list(1 << 20)
	var got []string
	if err != nil || json.Unmarshal([]byte(out), &got) != nil || !slices.Equal(got, want) {
		t.Errorf("kv_list under 1Mi: %d keys, %v", len(got), err)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type recordingStore struct {
	*kv.Memory
	ttl time.Duration
}

func (s *recordingStore) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	s.ttl = ttl
	return s.Memory.Set(ctx, key, value, ttl)
}

// TestCacheWarmerExample: the scheduled example keeps the upstream's body in the store: get answers from
// it without a fetch, warm refreshes it, and a failing upstream fails warm and keeps the last copy, which
// another instance sees too.
func TestCacheWarmerExample(t *testing.T) {
	var hits atomic.Int32
	var body atomic.Value
	body.Store("catalog v1")
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		b := body.Load().(string)
		if b == "" {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, b)
	}))
	t.Cleanup(upstream.Close)
	p := loadFile(t, newTestEngine(t), testplugins.Build(t, "cache-warmer"), PluginConfig{
		Name:   "ns/cache-warmer",
		Config: map[string]string{"url": upstream.URL + "/catalog.json", "ttl": "60"},
		Permissions: Permissions{
			HTTP: &HTTP{AllowedHosts: []string{"127.0.0.1"}, AllowPrivateNetworks: true, MaxResponseBytes: 1 << 20, Timeout: 5 * time.Second},
			KV:   &KV{Store: kv.NewMemory(kv.Limits{MaxBytes: 1 << 20, MaxKeys: 16}), MaxBytes: 1 << 20, MaxKeys: 16},
		},
		Limits: Limits{MaxMemoryBytes: 64 << 20, CallTimeout: 10 * time.Second},
	})
	a := newInstance(t, p)
	mustCall(t, a, "get", "", "catalog v1") // not warmed yet: fetched and kept
	mustCall(t, a, "get", "", "catalog v1")
	if n := hits.Load(); n != 1 {
		t.Fatalf("%d upstream fetches for two gets, want 1 (the second from the store)", n)
	}
	body.Store("catalog v2")
	mustCall(t, a, "warm", "", "warmed 10 bytes")
	mustCall(t, a, "get", "", "catalog v2")
	body.Store("")
	_, rc, err := a.Call(context.Background(), "warm", nil)
	if rc == 0 || err == nil || !strings.Contains(err.Error(), "status 503; the last copy stays") {
		t.Fatalf("warm with the upstream down = rc %d, %v; want a failure naming the status", rc, err)
	}
	mustCall(t, newInstance(t, p), "get", "", "catalog v2")
	if n := hits.Load(); n != 3 {
		t.Errorf("%d upstream fetches, want 3 (get, warm, failed warm)", n)
	}
}
