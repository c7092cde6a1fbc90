package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"time"

	"github.com/go-logr/logr/funcr"

	wasmv1 "github.com/wasm-operator/wasm-operator/api/v1alpha1"
	"github.com/wasm-operator/wasm-operator/internal/kv"
	"github.com/wasm-operator/wasm-operator/runtime"
)

func init() {
	commands["call"] = command{
		summary: "run one plugin function locally, without a cluster, like `extism call`",
		run:     runCall,
	}
}

// stringList is a repeatable flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(s string) error { *l = append(*l, s); return nil }

// byteSize is a flag holding a size such as 64Mi, 1Gi, 512Ki or a plain number of bytes.
type byteSize int64

func (b *byteSize) String() string {
	if *b == 0 {
		return "0"
	}
	return strconv.FormatInt(int64(*b), 10)
}

func (b *byteSize) Set(s string) error {
	n, err := parseByteSize(s)
	*b = byteSize(n)
	return err
}

func parseByteSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"K", 1e3}, {"M", 1e6}, {"G", 1e9}}
	mult := int64(1)
	num := s
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			num, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("invalid size %q (want a number of bytes, or one with Ki, Mi, Gi, K, M or G)", s)
	}
	return n * mult, nil
}

// timeoutFlag is a duration ("5s", "250ms"); a plain number is milliseconds, as extism's --timeout.
type timeoutFlag time.Duration

func (t *timeoutFlag) String() string { return time.Duration(*t).String() }
func (t *timeoutFlag) Set(s string) error {
	if ms, err := strconv.ParseUint(s, 10, 63); err == nil {
		*t = timeoutFlag(time.Duration(ms) * time.Millisecond)
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return fmt.Errorf("invalid timeout %q (want a duration such as 5s, or milliseconds)", s)
	}
	*t = timeoutFlag(d)
	return nil
}

const callUsage = `usage: manager call [flags] MODULE FUNCTION

Runs FUNCTION of the Extism plugin MODULE (a .wasm file) once, as a cluster host would, and
exits with the plugin's return code: its output goes to stdout, its error text to stderr.
Exit code 1 also means the host failed (the module cannot be read or loaded), 2 a usage error.

The plugin gets vars and logging; HTTP only to the hosts given with --allow-host; the key-value
store (permissions.kv) with --kv or --kv-file, in memory for the run, loaded from and saved to the
file when one is given.

flags:
`

func runCall(args []string) int {
	fs := flag.NewFlagSet("call", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), callUsage)
		fs.PrintDefaults()
	}
	var (
		input, inputFile, logLevel, cacheDir string
		kvFile                               string
		stdin, allowPrivate, kvOn            bool
		configs, hosts                       stringList
		memoryMax                            byteSize
		timeout                              timeoutFlag
		compile                              compileFlags
	)
	compile.register(fs)
	fs.StringVar(&input, "input", "", "the call's input")
	fs.StringVar(&inputFile, "input-file", "", "read the call's input from this file")
	fs.BoolVar(&stdin, "stdin", false, "read the call's input from standard input")
	fs.Var(&configs, "config", "a config entry the plugin reads with config_get, as key=value (repeatable)")
	fs.Var(&hosts, "allow-host", "a host (glob, such as *.example.com) the plugin may send HTTP requests to (repeatable)")
	fs.BoolVar(&allowPrivate, "allow-private-networks", false, "let HTTP requests reach loopback, private and cluster-internal addresses")
	fs.Var(&memoryMax, "memory-max", "the plugin's memory limit, such as 64Mi (default: no limit)")
	fs.Var(&timeout, "timeout", "the call's time limit, such as 5s, or milliseconds (default: no limit)")
	fs.StringVar(&logLevel, "log-level", "off", "the least severe plugin log level written to stderr: trace, debug, info, warn, error or off")
	fs.BoolVar(&kvOn, "kv", false, "grant the key-value store (kv_get, kv_set, kv_delete, kv_list), in memory for this run")
	fs.StringVar(&kvFile, "kv-file", "", "grant the key-value store, loaded from this JSON file (when it exists) and saved back to it after the call")
	fs.StringVar(&cacheDir, "cache-dir", "", "keep compiled code under this folder, as the cluster's shared cache does")
	// Flags may come before, between or after MODULE and FUNCTION, as with extism call.
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return 0
			}
			return 2
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			positional = append(positional, rest...)
			break
		}
		positional, args = append(positional, rest[0]), rest[1:]
	}
	if len(positional) != 2 {
		fs.Usage()
		return 2
	}
	modulePath, function := positional[0], positional[1]
	level, err := runtime.ParseLogLevel(logLevel)
	if err != nil {
		fmt.Fprintf(os.Stderr, "manager call: --log-level: %v\n", err)
		return 2
	}
	config := map[string]string{}
	for _, kv := range configs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			fmt.Fprintf(os.Stderr, "manager call: --config %q: want key=value\n", kv)
			return 2
		}
		config[k] = v
	}
	sources := 0
	for _, set := range []bool{input != "", inputFile != "", stdin} {
		if set {
			sources++
		}
	}
	if sources > 1 {
		fmt.Fprintln(os.Stderr, "manager call: give at most one of --input, --input-file and --stdin")
		return 2
	}

	data := []byte(input)
	switch {
	case inputFile != "":
		data, err = os.ReadFile(inputFile)
	case stdin:
		data, err = io.ReadAll(os.Stdin)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "manager call: read input: %v\n", err)
		return 1
	}
	wasm, err := os.ReadFile(modulePath)
	if err != nil {
		fmt.Fprintf(os.Stderr, "manager call: read module: %v\n", err)
		return 1
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	ecfg, err := compile.engineConfig(cacheDir)
	if err != nil {
		fmt.Fprintf(os.Stderr, "manager call: %v\n", err)
		return 1
	}
	engine, err := runtime.NewEngine(ctx, ecfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "manager call: %v\n", err)
		return 1
	}
	defer engine.Close(context.Background())

	var store *kv.Memory
	var kvPerm *runtime.KV
	if kvOn || kvFile != "" {
		store = kv.NewMemory(kv.Limits{MaxBytes: wasmv1.DefaultKVMaxBytes, MaxKeys: wasmv1.DefaultKVMaxKeys})
		if kvFile != "" {
			if err := loadKVFile(store, kvFile); err != nil {
				fmt.Fprintf(os.Stderr, "manager call: --kv-file: %v\n", err)
				return 1
			}
		}
		kvPerm = &runtime.KV{Store: store, MaxBytes: wasmv1.DefaultKVMaxBytes, MaxKeys: wasmv1.DefaultKVMaxKeys}
	}

	logger := funcr.New(func(prefix, args string) {
		fmt.Fprintln(os.Stderr, args)
	}, funcr.Options{Verbosity: 2})
	plugin, err := engine.Load(ctx, wasm, runtime.PluginConfig{
		Name:   modulePath,
		Config: config,
		Permissions: runtime.Permissions{
			HTTP: &runtime.HTTP{AllowedHosts: hosts, AllowPrivateNetworks: allowPrivate},
			Vars: &runtime.Vars{},
			Log:  &runtime.Log{Level: level},
			KV:   kvPerm,
		},
		Limits: runtime.Limits{MaxMemoryBytes: int64(memoryMax), CallTimeout: time.Duration(timeout)},
		Logger: logger,
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "manager call: %v\n", err)
		return 1
	}
	defer plugin.Close(context.Background())
	inst, err := plugin.NewInstance(ctx)
	if err != nil {
		fmt.Fprintf(os.Stderr, "manager call: %v\n", err)
		return 1
	}
	defer inst.Close(context.Background())

	out, rc, err := inst.Call(ctx, function, data)
	if kvFile != "" {
		if serr := saveKVFile(store, kvFile); serr != nil {
			fmt.Fprintf(os.Stderr, "manager call: --kv-file: save: %v\n", serr)
			if err == nil {
				err, rc = serr, 1
			}
		}
	}
	os.Stdout.Write(out)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		if rc == 0 {
			rc = 1
		}
	}
	return int(rc)
}
