package pdk

import (
	"encoding/json"
	"maps"
	"strings"
	"testing"
)

func TestEncodeHTTPRequest(t *testing.T) {
	tests := []struct {
		name    string
		method  string
		url     string
		headers map[string]string
	}{
		{"plain", "GET", "https://example.com/a?b=c&d=e", nil},
		{"headers sorted", "POST", "http://x", map[string]string{"b": "2", "a": "1", "X-Quote": `say "hi"\now`}},
		{"control and unicode", "PUT", "http://x/\u2028", map[string]string{"k": "tab\tnl\nnul\x00 é 👋 <>&"}},
		{"invalid utf-8", "GET", "http://x/\xff", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := encodeHTTPRequest(tt.method, tt.url, tt.headers)
			// Decoded the way the Extism Go SDK decodes it.
			var got struct {
				URL     string            `json:"url"`
				Method  string            `json:"method"`
				Headers map[string]string `json:"headers"`
			}
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatalf("%s: %v", b, err)
			}
			wantURL := strings.ToValidUTF8(tt.url, "\uFFFD")
			if got.URL != wantURL || got.Method != tt.method {
				t.Errorf("decoded url %q method %q, want %q %q", got.URL, got.Method, wantURL, tt.method)
			}
			if len(got.Headers) != len(tt.headers) || !maps.Equal(got.Headers, tt.headers) && len(tt.headers) > 0 {
				t.Errorf("decoded headers %q, want %q", got.Headers, tt.headers)
			}
		})
	}
	if got, want := string(encodeHTTPRequest("GET", "u", map[string]string{"b": "2", "a": "1"})),
		`{"url":"u","method":"GET","headers":{"a":"1","b":"2"}}`; got != want {
		t.Errorf("encoding = %s, want %s", got, want)
	}
}

func TestDecodeStringMap(t *testing.T) {
	valid := []string{
		`{}`,
		` { } `,
		`{"content-type":"text/plain; charset=utf-8","x-many":"a,b"}`,
		`{"esc":"\"\\\/\b\f\n\r\t\u00e9\ud83d\udc4b"}`,
		`{"lone":"\ud83d x","low":"\udc4b"}`,
		"{\n \"a\" : \"1\" ,\n \"b\":\"\"\n}",
		`{"dup":"1","dup":"2"}`,
	}
	for _, in := range valid {
		got, err := decodeStringMap([]byte(in))
		if err != nil {
			t.Errorf("decodeStringMap(%s): %v", in, err)
			continue
		}
		var want map[string]string
		if err := json.Unmarshal([]byte(in), &want); err != nil {
			t.Fatalf("encoding/json rejects %s: %v", in, err)
		}
		if !maps.Equal(got, want) {
			t.Errorf("decodeStringMap(%s) = %q, encoding/json gives %q", in, got, want)
		}
	}
	invalid := []string{
		``, `null`, `[]`, `{`, `{"a"}`, `{"a":1}`, `{"a":"1",}`, `{"a":"1"} x`,
		`{"a":"\x"}`, `{"a":"\u12"}`, "{\"a\":\"\x01\"}", `{"a":"1"`, `{"a":"`, `{"a":"\`,
	}
	for _, in := range invalid {
		if got, err := decodeStringMap([]byte(in)); err == nil {
			t.Errorf("decodeStringMap(%q) = %q, want an error", in, got)
		}
	}
}

func FuzzDecodeStringMap(f *testing.F) {
	f.Add([]byte(`{"a":"b"}`))
	f.Add([]byte(`{"esc":"\ud83d\udc4b\n"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := decodeStringMap(data)
		if err != nil {
			return
		}
		// Whatever it accepts, encoding/json reads the same way.
		var want map[string]string
		if jerr := json.Unmarshal(data, &want); jerr != nil {
			t.Fatalf("accepted %q, which encoding/json rejects: %v", data, jerr)
		}
		if !maps.Equal(got, want) {
			t.Fatalf("decodeStringMap(%q) = %q, encoding/json gives %q", data, got, want)
		}
	})
}

func TestLogLevel(t *testing.T) {
	const off = 1<<31 - 1
	tests := []struct {
		level LogLevel
		host  int32
		want  bool
	}{
		{LevelInfo, int32(LevelInfo), true},
		{LevelDebug, int32(LevelInfo), false},
		{LevelError, int32(LevelTrace), true},
		{LevelError, off, false},
		{LogLevel(7), int32(LevelTrace), false},
	}
	for _, tt := range tests {
		if got := tt.level.enabled(tt.host); got != tt.want {
			t.Errorf("%v.enabled(%d) = %v, want %v", tt.level, tt.host, got, tt.want)
		}
	}
	if LevelWarn.String() != "warn" || LogLevel(off).String() != "off" {
		t.Errorf("String: %q %q", LevelWarn, LogLevel(off))
	}
}
