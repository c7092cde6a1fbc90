package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"time"
	"unicode/utf8"

	"github.com/wasm-operator/wasm-operator/internal/kv"
)

// redisPasswordEnv holds the Redis password: an environment variable (the chart fills it from a Secret)
// rather than a flag, which any process on the node could read.
const redisPasswordEnv = "WASM_OPERATOR_KV_REDIS_PASSWORD"

// redisFlags configure the Redis of Cluster-scope key-value stores.
type redisFlags struct {
	address, username, caFile, serverName, keyPrefix string
	db                                               int
	tls                                              bool
}

func (f *redisFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.address, "kv-redis-address", "", "host:port of the Redis that holds plugins' Cluster-scope key-value stores; empty: such plugins fail to load (the password is read from $"+redisPasswordEnv+")")
	fs.StringVar(&f.username, "kv-redis-username", "", "Redis ACL user name; empty: the default user")
	fs.IntVar(&f.db, "kv-redis-db", 0, "Redis database number")
	fs.BoolVar(&f.tls, "kv-redis-tls", false, "connect to Redis over TLS")
	fs.StringVar(&f.caFile, "kv-redis-ca-file", "", "PEM certificates to trust for Redis's TLS certificate; empty: the system's roots (implies --kv-redis-tls)")
	fs.StringVar(&f.serverName, "kv-redis-server-name", "", "name to verify Redis's TLS certificate against; empty: the host of --kv-redis-address")
	fs.StringVar(&f.keyPrefix, "kv-redis-key-prefix", kv.DefaultKeyPrefix, "prefix of every Redis key, so that several operators can share one Redis")
}

// open returns the Redis client, or nil when no address is set. It does not connect.
func (f *redisFlags) open() (*kv.Redis, error) {
	if f.address == "" {
		if f.tls || f.caFile != "" || f.username != "" {
			return nil, errors.New("--kv-redis-tls, --kv-redis-ca-file and --kv-redis-username need --kv-redis-address")
		}
		return nil, nil
	}
	o := kv.RedisOptions{Address: f.address, Username: f.username, Password: os.Getenv(redisPasswordEnv),
		DB: f.db, KeyPrefix: f.keyPrefix}
	if f.tls || f.caFile != "" {
		o.TLS = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: f.serverName}
		if f.caFile != "" {
			pem, err := os.ReadFile(f.caFile)
			if err != nil {
				return nil, fmt.Errorf("--kv-redis-ca-file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("--kv-redis-ca-file %s holds no PEM certificate", f.caFile)
			}
			o.TLS.RootCAs = pool
		}
	}
	r, err := kv.NewRedis(o)
	if err != nil {
		return nil, fmt.Errorf("--kv-redis-address: %w", err)
	}
	return r, nil
}

// kvFileEntry is one entry of a --kv-file: the value as text, or as base64 when it is not UTF-8.
type kvFileEntry struct {
	Value   *string    `json:"value,omitempty"`
	Base64  []byte     `json:"base64,omitempty"`
	Expires *time.Time `json:"expires,omitempty"`
}

// loadKVFile fills m from path; a missing file is an empty store.
func loadKVFile(m *kv.Memory, path string) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var file map[string]kvFileEntry
	if err := json.Unmarshal(b, &file); err != nil {
		return fmt.Errorf("%s: want a JSON object of key: {\"value\": text} or {\"base64\": bytes}, optional \"expires\": %w", path, err)
	}
	entries := make([]kv.Entry, 0, len(file))
	for k, e := range file {
		if (e.Value == nil) == (e.Base64 == nil) {
			return fmt.Errorf("%s: key %q: give exactly one of \"value\" and \"base64\"", path, k)
		}
		ent := kv.Entry{Key: k, Value: e.Base64}
		if e.Value != nil {
			ent.Value = []byte(*e.Value)
		}
		if e.Expires != nil {
			ent.Expires = *e.Expires
		}
		entries = append(entries, ent)
	}
	if err := m.Restore(entries); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// saveKVFile writes m's live entries to path, replacing it atomically.
func saveKVFile(m *kv.Memory, path string) error {
	file := map[string]kvFileEntry{}
	for _, e := range m.Snapshot() {
		var fe kvFileEntry
		if utf8.Valid(e.Value) {
			s := string(e.Value)
			fe.Value = &s
		} else {
			fe.Base64 = e.Value
		}
		if !e.Expires.IsZero() {
			t := e.Expires.UTC()
			fe.Expires = &t
		}
		file[e.Key] = fe
	}
	b, err := json.MarshalIndent(file, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
