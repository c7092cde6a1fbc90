package runtime

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
)

// Permissions are the host services a plugin is granted. A service that is not granted does not
// exist for the plugin: a module that imports one of its functions is refused when it is loaded.
// The kernel (memory, input, output, errors) and config_get are always available.
type Permissions struct {
	// HTTP grants extism:host/env.http_request, http_status_code and http_headers.
	HTTP *HTTP
	// Vars grants extism:host/env.var_get and var_set.
	Vars *Vars
	// Log grants extism:host/env.get_log_level and log_trace .. log_error.
	Log *Log
	// KV grants extism:host/user.kv_get, kv_set, kv_delete and kv_list.
	KV *KV
}

// HTTP configures outgoing HTTP requests made by a plugin.
type HTTP struct {
	// AllowedHosts are glob patterns matched against the request's host name, case-insensitively:
	// "*" matches any run of characters (dots included) and "?" one character. A request to any
	// other host is refused. Empty refuses every request.
	AllowedHosts []string
	// AllowPrivateNetworks lets requests reach loopback, private, link-local, unique-local and
	// cluster-internal addresses and names. They are refused by default, checked on the address a
	// connection is made to (after DNS resolution) and on every redirect.
	AllowPrivateNetworks bool
	// MaxResponseBytes bounds a response body; a larger body fails the call. Zero means 50 MiB, as
	// in Extism.
	MaxResponseBytes int64
	// Timeout bounds one request, redirects included. Zero means only the call timeout applies.
	Timeout time.Duration
}

// Vars configures the per-instance variable store (var_get/var_set). Vars live as long as the
// instance: a pooled instance keeps them across calls.
type Vars struct {
	// MaxBytes bounds the store (keys, values and a small per-entry overhead, counted as Extism
	// does). A var_set that would exceed it fails the call. Zero means 1 MiB, as in Extism.
	MaxBytes int64
}

// Log configures plugin logging.
type Log struct {
	// Level is the least severe level that is written; messages below it are dropped without being
	// read. The zero value is LogInfo.
	Level LogLevel
}

// Limits bound what one instance of a plugin may use. A zero field means no limit.
type Limits struct {
	// MaxMemoryBytes bounds the instance's memory: its WebAssembly linear memory plus the kernel
	// memory that holds input, output and host-service data. A module whose initial memory is larger
	// is refused at load; growth beyond it fails inside the guest (memory.grow returns -1, alloc
	// returns 0), as WebAssembly specifies.
	MaxMemoryBytes int64
	// CallTimeout bounds one call. A call that runs longer is stopped and its instance discarded.
	CallTimeout time.Duration
	// InitTimeout bounds making an instance: the module's start section and its guest runtime's
	// initialisers. Zero means CallTimeout, or DefaultInitTimeout when that is zero too, so that no
	// guest code ever runs without a deadline while an instance is made.
	InitTimeout time.Duration
	// MaxInputBytes bounds the input of a call; a larger input is refused before the guest runs.
	MaxInputBytes int64
	// MaxOutputBytes bounds the output a call may set; setting a larger one fails the call.
	MaxOutputBytes int64
}

// DefaultInitTimeout bounds instantiation when neither Limits.InitTimeout nor Limits.CallTimeout is set.
const DefaultInitTimeout = 10 * time.Second

// ErrInitTimeout is returned by Plugin.NewInstance when the start section or an initialiser ran
// past the init timeout and was stopped.
var ErrInitTimeout = errors.New("guest initialisation timed out")

func (l Limits) initTimeout() time.Duration {
	switch {
	case l.InitTimeout > 0:
		return l.InitTimeout
	case l.CallTimeout > 0:
		return l.CallTimeout
	}
	return DefaultInitTimeout
}

func (l Limits) initTimeoutName() string {
	switch {
	case l.InitTimeout > 0:
		return "the host's init timeout, manager host --max-init-timeout"
	case l.CallTimeout > 0:
		return "limits.callTimeout"
	}
	return "the default init timeout"
}

// LogLevel is the severity of a plugin log message. The zero value is LogInfo.
type LogLevel int32

// Log levels, least severe first.
const (
	LogTrace LogLevel = iota - 2
	LogDebug
	LogInfo
	LogWarn
	LogError
	LogOff
)

// String returns the level's lowercase name.
func (l LogLevel) String() string {
	switch l {
	case LogTrace:
		return "trace"
	case LogDebug:
		return "debug"
	case LogInfo:
		return "info"
	case LogWarn:
		return "warn"
	case LogError:
		return "error"
	case LogOff:
		return "off"
	}
	return fmt.Sprintf("LogLevel(%d)", int32(l))
}

// ParseLogLevel parses trace, debug, info, warn (or warning), error and off, in any case.
func ParseLogLevel(s string) (LogLevel, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "trace":
		return LogTrace, nil
	case "debug":
		return LogDebug, nil
	case "info", "":
		return LogInfo, nil
	case "warn", "warning":
		return LogWarn, nil
	case "error":
		return LogError, nil
	case "off", "none":
		return LogOff, nil
	}
	return LogInfo, fmt.Errorf("unknown log level %q (want trace, debug, info, warn, error or off)", s)
}

// extism returns the number get_log_level reports to the guest, as Extism numbers levels.
func (l LogLevel) extism() int32 {
	switch {
	case l <= LogTrace:
		return 0
	case l == LogDebug:
		return 1
	case l == LogInfo:
		return 2
	case l == LogWarn:
		return 3
	case l == LogError:
		return 4
	}
	return math.MaxInt32
}

const (
	defaultMaxHTTPResponseBytes = 50 << 20
	defaultMaxVarBytes          = 1 << 20
)

// formatBytes renders n in the largest binary unit that divides it, as Kubernetes quantities do
// ("64Mi", "1536Ki", "100").
func formatBytes(n uint64) string {
	for _, u := range []struct {
		shift uint
		name  string
	}{{40, "Ti"}, {30, "Gi"}, {20, "Mi"}, {10, "Ki"}} {
		if n >= 1<<u.shift && n%(1<<u.shift) == 0 {
			return fmt.Sprintf("%d%s", n>>u.shift, u.name)
		}
	}
	return fmt.Sprintf("%d", n)
}
