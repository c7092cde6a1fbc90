package kv

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultKeyPrefix starts every Redis key the operator writes.
const DefaultKeyPrefix = "wasm-operator:kv"

// RedisOptions configure the connection to the operator's Redis.
type RedisOptions struct {
	// Address is host:port.
	Address string
	// Username and Password authenticate (AUTH); both empty: no authentication.
	Username, Password string
	// DB is the database number. Default 0.
	DB int
	// TLS, when not nil, connects over TLS with this configuration.
	TLS *tls.Config
	// KeyPrefix starts every key, so that several operators can share a Redis. Default DefaultKeyPrefix.
	KeyPrefix string
}

// Redis is the Cluster-scope backend: one Redis shared by every host, each plugin's entries under keys of
// its own. It is safe for concurrent use.
type Redis struct {
	client *redis.Client
	addr   string
	prefix string
}

// NewRedis returns a client for the Redis at o.Address. It does not connect until it is used, so a Redis
// that is down fails the plugins' kv calls, not the host's start.
func NewRedis(o RedisOptions) (*Redis, error) {
	if o.Address == "" {
		return nil, errors.New("redis: no address (host:port)")
	}
	if o.KeyPrefix == "" {
		o.KeyPrefix = DefaultKeyPrefix
	}
	c := redis.NewClient(&redis.Options{
		Addr:     o.Address,
		Username: o.Username,
		Password: o.Password,
		DB:       o.DB,
		// Plugin calls wait on Redis within their own timeout: fail fast rather than retry a Redis that is
		// down.
		DialTimeout:  2 * time.Second,
		ReadTimeout:  2 * time.Second,
		WriteTimeout: 2 * time.Second,
		MaxRetries:   1,
		// And never past the plugin call's own deadline.
		ContextTimeoutEnabled: true,
		TLSConfig:             o.TLS,
		// Keep the handshake to what every Redis since 6 accepts.
		DisableIdentity: true,
		Protocol:        2,
	})
	return &Redis{client: c, addr: o.Address, prefix: o.KeyPrefix}, nil
}

// Close closes the connections.
func (r *Redis) Close() error { return r.client.Close() }

// Ping checks that Redis answers.
func (r *Redis) Ping(ctx context.Context) error {
	return r.wrap(r.client.Ping(ctx).Err())
}

// Store returns the plugin's store, bounded by l. Stores of the same plugin name share their entries,
// whichever host or process makes them.
func (r *Redis) Store(plugin string, l Limits) *RedisStore {
	// The braces are a hash tag: in a Redis Cluster all of a plugin's keys land in one slot, which its
	// scripts need.
	return &RedisStore{r: r, base: r.prefix + ":{" + plugin + "}:", limits: l}
}

// RedisStore is one plugin's entries in Redis. Each entry is a Redis string with Redis's own expiry;
// beside them an index of keys, their sizes and expiries lets scripts enforce the limits atomically.
// A write over the limits fails with ErrFull: Redis keeps no use order to evict by.
type RedisStore struct {
	r      *Redis
	base   string
	limits Limits
}

// Get returns the value of key and whether it is set.
func (s *RedisStore) Get(ctx context.Context, key string) ([]byte, bool, error) {
	v, err := s.r.client.Get(ctx, s.base+"v:"+key).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, s.r.wrap(err)
	}
	return v, true, nil
}

// GetAtMost is Get for a caller that can take at most max bytes (runtime.KVBoundedGetter): Redis sends at
// most max+1 bytes of the value (GETRANGE), so a longer one is never read whole; its length is then at
// least max+1. GETRANGE reads a missing key as empty, which kv_get treats as unset too.
func (s *RedisStore) GetAtMost(ctx context.Context, key string, max int64) ([]byte, bool, int64, error) {
	if max < 0 {
		max = 0 // GETRANGE reads a negative end from the value's end: the whole value
	}
	if max >= math.MaxInt64-1 {
		v, ok, err := s.Get(ctx, key)
		return v, ok, int64(len(v)), err
	}
	v, err := s.r.client.GetRange(ctx, s.base+"v:"+key, 0, max).Bytes()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, false, 0, s.r.wrap(err)
	}
	if int64(len(v)) > max {
		return nil, true, int64(len(v)), nil
	}
	return v, len(v) > 0, int64(len(v)), nil
}

// Set stores value under key for ttl (0: no expiry), failing with ErrTooLarge or ErrFull when it does not
// fit.
func (s *RedisStore) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if err := s.limits.check(key, value); err != nil {
		return err
	}
	ms := int64(0)
	if ttl > 0 {
		ms = max(ttl.Milliseconds(), 1)
	}
	err := setScript.Run(ctx, s.r.client, []string{s.base + "keys"}, s.base, key, value, ms,
		s.limits.MaxBytes, s.limits.MaxKeys).Err()
	if err != nil && strings.HasPrefix(err.Error(), "FULL ") {
		what, n, _ := strings.Cut(strings.TrimPrefix(err.Error(), "FULL "), " ")
		if what == "keys" {
			return fmt.Errorf("%w: %s keys, more than the limit of %d (permissions.kv.maxKeys); delete some or let them expire",
				ErrFull, n, s.limits.MaxKeys)
		}
		return fmt.Errorf("%w: %s bytes, more than the limit of %d (permissions.kv.maxBytes); delete some or let them expire",
			ErrFull, n, s.limits.MaxBytes)
	}
	return s.r.wrap(err)
}

// Delete removes key.
func (s *RedisStore) Delete(ctx context.Context, key string) error {
	return s.r.wrap(deleteScript.Run(ctx, s.r.client, []string{s.base + "keys"}, s.base, key).Err())
}

// List returns the keys that start with prefix, sorted bytewise, at most limit (<= 0: all).
func (s *RedisStore) List(ctx context.Context, prefix string, limit int) ([]string, error) {
	lo, hi := "-", "+"
	if prefix != "" {
		lo = "[" + prefix
		if up, ok := prefixEnd(prefix); ok {
			hi = "(" + up
		}
	}
	keys, err := listScript.Run(ctx, s.r.client, []string{s.base + "keys"}, s.base, lo, hi, max(limit, -1)).StringSlice()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	return keys, s.r.wrap(err)
}

// prefixEnd is the least string greater than every string starting with p; false when there is none.
func prefixEnd(p string) (string, bool) {
	b := []byte(p)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1]), true
		}
	}
	return "", false
}

func (r *Redis) wrap(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("%w: redis at %s: %v", ErrUnavailable, r.addr, err)
}

// purge removes the entries whose expiry has passed from the index and the byte count; Redis has dropped
// their values already. Every script runs it first, on Redis's clock.
const purge = `
local base = ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expired = redis.call('ZRANGEBYSCORE', base .. 'exp', '-inf', now)
for _, k in ipairs(expired) do
  local sz = tonumber(redis.call('HGET', base .. 'size', k) or '0')
  redis.call('HDEL', base .. 'size', k)
  redis.call('ZREM', base .. 'keys', k)
  redis.call('DECRBY', base .. 'bytes', sz)
  redis.call('DEL', base .. 'v:' .. k)
end
if #expired > 0 then redis.call('ZREMRANGEBYSCORE', base .. 'exp', '-inf', now) end
`

var setScript = redis.NewScript(purge + `
local key, value = ARGV[2], ARGV[3]
local ttl, maxBytes, maxKeys = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local size = #key + #value
local old = redis.call('HGET', base .. 'size', key)
local total = tonumber(redis.call('GET', base .. 'bytes') or '0')
local count = redis.call('ZCARD', base .. 'keys')
local oldSize = 0
if old then oldSize = tonumber(old) else count = count + 1 end
if total - oldSize + size > maxBytes then return redis.error_reply('FULL bytes ' .. (total - oldSize + size)) end
if count > maxKeys then return redis.error_reply('FULL keys ' .. count) end
if ttl > 0 then
  redis.call('SET', base .. 'v:' .. key, value, 'PX', ttl)
  redis.call('ZADD', base .. 'exp', now + ttl, key)
else
  redis.call('SET', base .. 'v:' .. key, value)
  redis.call('ZREM', base .. 'exp', key)
end
redis.call('ZADD', base .. 'keys', 0, key)
redis.call('HSET', base .. 'size', key, size)
redis.call('INCRBY', base .. 'bytes', size - oldSize)
return 1
`)

var deleteScript = redis.NewScript(purge + `
local key = ARGV[2]
local old = redis.call('HGET', base .. 'size', key)
if old then
  redis.call('DEL', base .. 'v:' .. key)
  redis.call('ZREM', base .. 'keys', key)
  redis.call('ZREM', base .. 'exp', key)
  redis.call('HDEL', base .. 'size', key)
  redis.call('DECRBY', base .. 'bytes', tonumber(old))
end
return 1
`)

var listScript = redis.NewScript(purge + `
local limit = tonumber(ARGV[4])
if limit > 0 then
  return redis.call('ZRANGEBYLEX', base .. 'keys', ARGV[2], ARGV[3], 'LIMIT', 0, limit)
end
return redis.call('ZRANGEBYLEX', base .. 'keys', ARGV[2], ARGV[3])
`)
