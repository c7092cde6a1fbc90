package jsonstr

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestAppend(t *testing.T) {
	for _, s := range []string{"", "plain", `quo"te`, `back\slash`, "nl\ncr\rtab\t", "\x00\x01\x1f", "<tag>&amp;", "é ü 日本",
		"\u2028\u2029", "emoji 🎉", "bad \xff byte"} {
		got := Append(nil, s)
		if len(got) != Len(s) {
			t.Errorf("%q: %d bytes written, %d counted", s, len(got), Len(s))
		}
		var back string
		if err := json.Unmarshal(got, &back); err != nil || back != strings.ToValidUTF8(s, "\ufffd") {
			t.Errorf("%q encodes as %s, which decodes to %q (%v)", s, got, back, err)
		}
	}
}
