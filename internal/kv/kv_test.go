package kv_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wasm-operator/wasm-operator/internal/kv"
	"github.com/wasm-operator/wasm-operator/internal/kv/redistest"
)

// store is what both backends offer.
type store interface {
	Get(ctx context.Context, key string) ([]byte, bool, error)
	Set(ctx context.Context, key string, value []byte, ttl time.Duration) error
	Delete(ctx context.Context, key string) error
	List(ctx context.Context, prefix string, limit int) ([]string, error)
}

var (
	_ store = (*kv.Memory)(nil)
	_ store = (*kv.RedisStore)(nil)
)

// backends returns a fresh store of each kind with the same limits.
func backends(t *testing.T, l kv.Limits) map[string]store {
	t.Helper()
	r, err := kv.NewRedis(kv.RedisOptions{Address: redisAddr(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return map[string]store{
		"memory": kv.NewMemory(l),
		"redis":  r.Store(t.Name(), l),
	}
}

// redisSrv is one redis-server for the package's tests; each test uses its own plugin name.
var redisSrv string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "kv-redis-")
	if err != nil {
		panic(err)
	}
	srv, err := redistest.Run(dir, redistest.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	redisSrv = srv.Addr
	code := m.Run()
	srv.Stop()
	os.RemoveAll(dir)
	os.Exit(code)
}

func redisAddr(*testing.T) string { return redisSrv }

func TestStoreBasics(t *testing.T) {
	ctx := context.Background()
	for name, s := range backends(t, kv.Limits{MaxBytes: 1 << 10, MaxKeys: 16}) {
		t.Run(name, func(t *testing.T) {
			if _, ok, err := s.Get(ctx, "missing"); ok || err != nil {
				t.Fatalf("Get(missing) = %v, %v; want absent", ok, err)
			}
			steps := []struct {
				key, value string
			}{{"user/1", "ann"}, {"user/2", "bob"}, {"user/10", "cy"}, {"group/a", "x"}, {"user/1", "anne"}}
			for _, st := range steps {
				if err := s.Set(ctx, st.key, []byte(st.value), 0); err != nil {
					t.Fatalf("Set(%s): %v", st.key, err)
				}
			}
			v, ok, err := s.Get(ctx, "user/1")
			if err != nil || !ok || string(v) != "anne" {
				t.Fatalf("Get(user/1) = %q, %v, %v; want the last value set", v, ok, err)
			}
			for _, c := range []struct {
				prefix string
				limit  int
				want   []string
			}{
				{"user/", 0, []string{"user/1", "user/10", "user/2"}},
				{"user/", 2, []string{"user/1", "user/10"}},
				{"", 0, []string{"group/a", "user/1", "user/10", "user/2"}},
				{"nobody", 0, nil},
			} {
				got, err := s.List(ctx, c.prefix, c.limit)
				if err != nil || !slices.Equal(got, c.want) {
					t.Errorf("List(%q, %d) = %q, %v; want %q", c.prefix, c.limit, got, err, c.want)
				}
			}
			if err := s.Delete(ctx, "user/2"); err != nil {
				t.Fatal(err)
			}
			if err := s.Delete(ctx, "never-set"); err != nil {
				t.Fatalf("deleting an absent key: %v", err)
			}
			if _, ok, _ := s.Get(ctx, "user/2"); ok {
				t.Fatal("deleted key still set")
			}
		})
	}
}

func TestStoreRefusesEntryOverMaxBytes(t *testing.T) {
	ctx := context.Background()
	for name, s := range backends(t, kv.Limits{MaxBytes: 100, MaxKeys: 16}) {
		t.Run(name, func(t *testing.T) {
			if err := s.Set(ctx, "keep", []byte("me"), 0); err != nil {
				t.Fatal(err)
			}
			err := s.Set(ctx, "big", make([]byte, 100), 0)
			if !errors.Is(err, kv.ErrTooLarge) || !strings.Contains(err.Error(), "permissions.kv.maxBytes") {
				t.Fatalf("Set(101 bytes) = %v; want ErrTooLarge naming permissions.kv.maxBytes", err)
			}
			if v, ok, _ := s.Get(ctx, "keep"); !ok || string(v) != "me" {
				t.Fatal("a refused entry evicted another")
			}
		})
	}
}

func TestStoreTTL(t *testing.T) {
	ctx := context.Background()
	for name, s := range backends(t, kv.Limits{MaxBytes: 1 << 10, MaxKeys: 16}) {
		t.Run(name, func(t *testing.T) {
			if err := s.Set(ctx, "short", []byte("x"), 50*time.Millisecond); err != nil {
				t.Fatal(err)
			}
			if err := s.Set(ctx, "long", []byte("y"), time.Hour); err != nil {
				t.Fatal(err)
			}
			if _, ok, _ := s.Get(ctx, "short"); !ok {
				t.Fatal("entry gone before its TTL")
			}
			deadline := time.Now().Add(5 * time.Second)
			for {
				_, ok, err := s.Get(ctx, "short")
				if err != nil {
					t.Fatal(err)
				}
				if !ok {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("entry still set 5s after a 50ms TTL")
				}
				time.Sleep(10 * time.Millisecond)
			}
			keys, _ := s.List(ctx, "", 0)
			if !slices.Equal(keys, []string{"long"}) {
				t.Fatalf("List after expiry = %q; want [long]", keys)
			}
			// Setting again without a TTL makes it permanent.
			if err := s.Set(ctx, "long", []byte("z"), 0); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestMemoryEvictsLeastRecentlyUsed(t *testing.T) {
	ctx := context.Background()
	m := kv.NewMemory(kv.Limits{MaxBytes: 1 << 10, MaxKeys: 3})
	for _, k := range []string{"a", "b", "c"} {
		if err := m.Set(ctx, k, []byte(k), 0); err != nil {
			t.Fatal(err)
		}
	}
	m.Get(ctx, "a") // a is now the most recently used; b the least
	if err := m.Set(ctx, "d", []byte("d"), 0); err != nil {
		t.Fatal(err)
	}
	if keys, _ := m.List(ctx, "", 0); !slices.Equal(keys, []string{"a", "c", "d"}) {
		t.Fatalf("after a fourth key = %q; want b evicted", keys)
	}

	// By bytes: 10-byte entries in a 30-byte store.
	m = kv.NewMemory(kv.Limits{MaxBytes: 30, MaxKeys: 100})
	for _, k := range []string{"k1", "k2", "k3"} {
		m.Set(ctx, k, []byte("12345678"), 0)
	}
	m.Set(ctx, "k4", []byte("12345678901234"), 0) // 16 bytes: k1 and k2 must go
	if keys, _ := m.List(ctx, "", 0); !slices.Equal(keys, []string{"k3", "k4"}) {
		t.Fatalf("after a large entry = %q; want [k3 k4]", keys)
	}
	if n, b := m.Len(); n != 2 || b != 26 {
		t.Fatalf("Len = %d keys, %d bytes; want 2, 26", n, b)
	}

	// Lowering the limits evicts at once.
	m.SetLimits(kv.Limits{MaxBytes: 20, MaxKeys: 100})
	if keys, _ := m.List(ctx, "", 0); !slices.Equal(keys, []string{"k4"}) {
		t.Fatalf("after lowering maxBytes = %q; want [k4]", keys)
	}
}

func TestMemorySnapshotRestore(t *testing.T) {
	ctx := context.Background()
	m := kv.NewMemory(kv.Limits{MaxBytes: 1 << 10, MaxKeys: 10})
	m.Set(ctx, "a", []byte("1"), 0)
	m.Set(ctx, "b", []byte("2"), time.Hour)
	snap := m.Snapshot()
	snap = append(snap, kv.Entry{Key: "old", Value: []byte("x"), Expires: time.Now().Add(-time.Second)})
	m2 := kv.NewMemory(kv.Limits{MaxBytes: 1 << 10, MaxKeys: 10})
	if err := m2.Restore(snap); err != nil {
		t.Fatal(err)
	}
	if keys, _ := m2.List(ctx, "", 0); !slices.Equal(keys, []string{"a", "b"}) {
		t.Fatalf("restored keys = %q; want [a b] (the expired entry skipped)", keys)
	}
	if got := m2.Snapshot(); got[1].Expires.IsZero() || got[0].Expires.IsZero() == false {
		t.Fatalf("restored expiries = %v", got)
	}
}

func TestNodeSharesStorePerPlugin(t *testing.T) {
	ctx := context.Background()
	var n kv.Node
	l := kv.Limits{MaxBytes: 100, MaxKeys: 10}
	n.Store("ns/a", l).Set(ctx, "k", []byte("v"), 0)
	if _, ok, _ := n.Store("ns/a", l).Get(ctx, "k"); !ok {
		t.Fatal("a plugin's second store handle does not see the first one's entry")
	}
	if _, ok, _ := n.Store("ns/b", l).Get(ctx, "k"); ok {
		t.Fatal("another plugin sees the entry")
	}
	n.Remove("ns/a")
	if _, ok, _ := n.Store("ns/a", l).Get(ctx, "k"); ok {
		t.Fatal("entry survived the plugin's removal")
	}
}

func TestRedisFullAndNamespaced(t *testing.T) {
	ctx := context.Background()
	r, err := kv.NewRedis(kv.RedisOptions{Address: redisAddr(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	a := r.Store("ns/full-a", kv.Limits{MaxBytes: 20, MaxKeys: 2})
	b := r.Store("ns/full-b", kv.Limits{MaxBytes: 20, MaxKeys: 2})
	a.Set(ctx, "k1", []byte("v"), 0)
	a.Set(ctx, "k2", []byte("v"), 0)
	if err := a.Set(ctx, "k3", []byte("v"), 0); !errors.Is(err, kv.ErrFull) || !strings.Contains(err.Error(), "permissions.kv.maxKeys") {
		t.Fatalf("third key of two = %v; want ErrFull naming permissions.kv.maxKeys", err)
	}
	if err := a.Set(ctx, "k1", []byte("0123456789abcdef"), 0); !errors.Is(err, kv.ErrFull) || !strings.Contains(err.Error(), "permissions.kv.maxBytes") {
		t.Fatalf("over maxBytes in total = %v; want ErrFull naming permissions.kv.maxBytes", err)
	}
	if err := a.Set(ctx, "k2", []byte("w"), 0); err != nil {
		t.Fatalf("replacing a key in a full store: %v", err)
	}
	a.Delete(ctx, "k1")
	if err := a.Set(ctx, "k3", []byte("v"), 0); err != nil {
		t.Fatalf("set after a delete freed room: %v", err)
	}
	if _, ok, _ := b.Get(ctx, "k2"); ok {
		t.Fatal("another plugin's store sees the entry")
	}
	if keys, _ := b.List(ctx, "", 0); len(keys) != 0 {
		t.Fatalf("another plugin lists %q", keys)
	}
}

func TestRedisDownFailsClearly(t *testing.T) {
	ctx := context.Background()
	srv := redistest.StartServer(t, redistest.Options{})
	r, _ := kv.NewRedis(kv.RedisOptions{Address: srv.Addr})
	defer r.Close()
	s := r.Store("ns/p", kv.Limits{MaxBytes: 100, MaxKeys: 10})
	if err := s.Set(ctx, "k", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	for name, op := range map[string]func() error{
		"get":    func() error { _, _, err := s.Get(ctx, "k"); return err },
		"set":    func() error { return s.Set(ctx, "k", []byte("v"), 0) },
		"delete": func() error { return s.Delete(ctx, "k") },
		"list":   func() error { _, err := s.List(ctx, "", 0); return err },
	} {
		err := op()
		if !errors.Is(err, kv.ErrUnavailable) || !strings.Contains(err.Error(), srv.Addr) {
			t.Errorf("%s with Redis down = %v; want ErrUnavailable naming %s", name, err, srv.Addr)
		}
	}
}

func TestRedisPassword(t *testing.T) {
	ctx := context.Background()
	srv := redistest.StartServer(t, redistest.Options{Password: "s3cret"})
	bad, _ := kv.NewRedis(kv.RedisOptions{Address: srv.Addr})
	defer bad.Close()
	if err := bad.Ping(ctx); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
		t.Fatalf("ping without the password = %v; want NOAUTH", err)
	}
	good, _ := kv.NewRedis(kv.RedisOptions{Address: srv.Addr, Password: "s3cret"})
	defer good.Close()
	if err := good.Ping(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestHammer: many goroutines on one store of each kind, under -race; the limits hold throughout.
func TestHammer(t *testing.T) {
	ctx := context.Background()
	const maxKeys, maxBytes = 50, 2000
	m := kv.NewMemory(kv.Limits{MaxBytes: maxBytes, MaxKeys: maxKeys})
	r, _ := kv.NewRedis(kv.RedisOptions{Address: redisAddr(t)})
	defer r.Close()
	stores := map[string]store{"memory": m, "redis": r.Store(t.Name(), kv.Limits{MaxBytes: maxBytes, MaxKeys: maxKeys})}
	for name, s := range stores {
		t.Run(name, func(t *testing.T) {
			var wg sync.WaitGroup
			errs := make(chan error, 16)
			for g := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range 300 {
						key := fmt.Sprintf("k%d", (g*7+i)%80)
						var err error
						switch i % 5 {
						case 0, 1:
							err = s.Set(ctx, key, []byte(strings.Repeat("v", i%40)), time.Duration(i%3)*time.Millisecond)
							if errors.Is(err, kv.ErrFull) {
								err = nil // Redis refuses rather than evicts
							}
						case 2:
							_, _, err = s.Get(ctx, key)
						case 3:
							err = s.Delete(ctx, key)
						case 4:
							var keys []string
							keys, err = s.List(ctx, "k", 0)
							if err == nil && len(keys) > maxKeys {
								err = fmt.Errorf("%d keys listed, over the limit of %d", len(keys), maxKeys)
							}
						}
						if err != nil {
							errs <- err
							return
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
	if n, b := m.Len(); n > maxKeys || b > maxBytes {
		t.Fatalf("memory store holds %d keys, %d bytes; limits %d, %d", n, b, maxKeys, maxBytes)
	}
}
