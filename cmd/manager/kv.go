package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"

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
