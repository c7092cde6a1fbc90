package pdk

// LogLevel is the severity of a log message. The values are the ones the
// Extism host function get_log_level returns, so they compare directly.
type LogLevel int32

// Log levels, from the most verbose to the most severe.
const (
	LevelTrace LogLevel = 0
	LevelDebug LogLevel = 1
	LevelInfo  LogLevel = 2
	LevelWarn  LogLevel = 3
	LevelError LogLevel = 4
)

// String returns the level's lowercase name, or "off" for any other value
// (hosts report math.MaxInt32 when logging is off).
func (l LogLevel) String() string {
	switch l {
	case LevelTrace:
		return "trace"
	case LevelDebug:
		return "debug"
	case LevelInfo:
		return "info"
	case LevelWarn:
		return "warn"
	case LevelError:
		return "error"
	default:
		return "off"
	}
}

// enabled reports whether a message at level l passes the host's minimum
// level, as get_log_level reports it.
func (l LogLevel) enabled(hostLevel int32) bool {
	return l >= LevelTrace && l <= LevelError && int32(l) >= hostLevel
}
