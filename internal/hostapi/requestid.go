package hostapi

import (
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"sync/atomic"
)

// maxRequestIDLen bounds a request id taken from a caller, so that it cannot bloat logs.
const maxRequestIDLen = 64

var (
	// idPrefix makes generated ids unique across hosts and restarts; idSeq within a process.
	idPrefix = func() string {
		var b [8]byte
		_, _ = rand.Read(b[:]) // crypto/rand.Read does not fail
		return hex.EncodeToString(b[:]) + "-"
	}()
	idSeq atomic.Uint64
)

// requestID returns the caller's id when it is usable as is, else a cleaned copy of it, else a
// new id. Only letters, digits and "-_.:/" are kept, at most maxRequestIDLen of them, so the id
// is safe in a header and in a log line.
func requestID(given string) string {
	if given != "" {
		if len(given) <= maxRequestIDLen && cleanID(given) {
			return given
		}
		b := make([]byte, 0, min(len(given), maxRequestIDLen))
		for i := 0; i < len(given) && len(b) < maxRequestIDLen; i++ {
			if idChar(given[i]) {
				b = append(b, given[i])
			}
		}
		if len(b) > 0 {
			return string(b)
		}
	}
	return idPrefix + strconv.FormatUint(idSeq.Add(1), 10)
}

func cleanID(s string) bool {
	for i := 0; i < len(s); i++ {
		if !idChar(s[i]) {
			return false
		}
	}
	return true
}

func idChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '-', '_', '.', ':', '/':
		return true
	}
	return false
}
