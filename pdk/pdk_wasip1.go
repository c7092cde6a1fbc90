//go:build wasip1

package pdk

import (
	"encoding/binary"
	"encoding/json"
)

// Input returns a copy of the call's input. It reads the input from the host
// on every use; a function that needs it twice should keep the result.
func Input() []byte {
	n := hostInputLength()
	buf := make([]byte, n)
	i := 0
	for ; i+8 <= len(buf); i += 8 {
		binary.LittleEndian.PutUint64(buf[i:], hostInputLoadU64(uint64(i)))
	}
	for ; i < len(buf); i++ {
		buf[i] = byte(hostInputLoadU8(uint64(i)))
	}
	return buf
}

// InputString returns the call's input as a string.
func InputString() string {
	return string(Input())
}

// InputJSON decodes the call's input as JSON into v.
func InputJSON(v any) error {
	return json.Unmarshal(Input(), v)
}

// Output sets the call's output to a copy of data, replacing any output set
// before in the same call.
func Output(data []byte) {
	hostOutputSet(allocBytes(data), uint64(len(data)))
}

// OutputString sets the call's output to s.
func OutputString(s string) {
	Output([]byte(s))
}

// OutputJSON sets the call's output to v encoded as JSON (encoding/json).
func OutputJSON(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	Output(b)
	return nil
}

// SetError reports err's text as the call's error. The exported function
// should then return a non-zero code; hosts report the text to the caller.
func SetError(err error) {
	SetErrorString(err.Error())
}

// SetErrorString reports msg as the call's error. An empty msg is no error.
func SetErrorString(msg string) {
	if msg == "" {
		return
	}
	hostErrorSet(allocString(msg))
}

// Config returns the value of the plugin configuration key and whether the
// key is set. A key set to the empty string reads as unset: the Extism ABI
// passes values in kernel memory blocks, and there are no empty blocks.
func Config(key string) (string, bool) {
	k := allocString(key)
	v := hostConfigGet(k)
	if k != 0 {
		hostFree(k)
	}
	if v == 0 {
		return "", false
	}
	return string(takeBlock(v)), true
}

// GetVar returns the value of the variable key and whether it is set.
// Variables belong to one plugin instance and outlive a call; hosts may limit
// their total size.
func GetVar(key string) ([]byte, bool) {
	// The host frees the key block after reading it.
	v := hostVarGet(allocString(key))
	if v == 0 {
		return nil, false
	}
	return takeBlock(v), true
}

// SetVar sets the variable key to a copy of value. Setting an empty value
// removes the variable, as the Extism ABI has no empty values. A host whose
// variable store is full stops the call.
func SetVar(key string, value []byte) {
	// The host frees both blocks after reading them.
	hostVarSet(allocString(key), allocBytes(value))
}

// RemoveVar removes the variable key; removing an unset variable is a no-op.
func RemoveVar(key string) {
	hostVarSet(allocString(key), 0)
}

// LogLevelEnabled reports whether the host records messages at level l, so
// a plugin can skip building a message nobody reads.
func LogLevelEnabled(l LogLevel) bool {
	return l.enabled(hostGetLogLevel())
}

// Log sends msg to the host's log at level l, when the host's log level lets
// it through.
func Log(l LogLevel, msg string) {
	if !LogLevelEnabled(l) {
		return
	}
	// The host frees the message block after reading it. A message needs a
	// block, so an empty one is sent as a single space.
	if msg == "" {
		msg = " "
	}
	offset := allocString(msg)
	switch l {
	case LevelTrace:
		hostLogTrace(offset)
	case LevelDebug:
		hostLogDebug(offset)
	case LevelInfo:
		hostLogInfo(offset)
	case LevelWarn:
		hostLogWarn(offset)
	case LevelError:
		hostLogError(offset)
	}
}
