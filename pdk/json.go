package pdk

import (
	"errors"
	"slices"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/wasm-operator/wasm-operator/internal/jsonstr"
)

// The HTTP host functions exchange small JSON documents: the request
// description the plugin sends and the response headers it reads back. Both
// are flat objects of strings, so a few dozen lines do the job without
// encoding/json, which would add its reflection machinery to every plugin
// that makes a request.

// encodeHTTPRequest returns the request description http_request expects:
// {"url":...,"method":...,"headers":{...}}, header names sorted so the same
// request always encodes the same way.
func encodeHTTPRequest(method, url string, headers map[string]string) []byte {
	b := make([]byte, 0, 64+len(url))
	b = append(b, `{"url":`...)
	b = jsonstr.Append(b, url)
	b = append(b, `,"method":`...)
	b = jsonstr.Append(b, method)
	b = append(b, `,"headers":{`...)
	keys := make([]string, 0, len(headers))
	for k := range headers {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = jsonstr.Append(b, k)
		b = append(b, ':')
		b = jsonstr.Append(b, headers[k])
	}
	return append(b, "}}"...)
}

var errBadJSON = errors.New("pdk: malformed JSON object of strings")

// decodeStringMap parses a JSON object whose values are all strings, such as
// the response headers http_headers returns.
func decodeStringMap(data []byte) (map[string]string, error) {
	d := jsonDecoder{data: data}
	m := map[string]string{}
	d.space()
	if !d.consume('{') {
		return nil, errBadJSON
	}
	d.space()
	if d.consume('}') {
		return m, d.end()
	}
	for {
		d.space()
		k, err := d.str()
		if err != nil {
			return nil, err
		}
		d.space()
		if !d.consume(':') {
			return nil, errBadJSON
		}
		d.space()
		v, err := d.str()
		if err != nil {
			return nil, err
		}
		m[k] = v
		d.space()
		if d.consume(',') {
			continue
		}
		if d.consume('}') {
			return m, d.end()
		}
		return nil, errBadJSON
	}
}

type jsonDecoder struct {
	data []byte
	pos  int
}

func (d *jsonDecoder) space() {
	for d.pos < len(d.data) {
		switch d.data[d.pos] {
		case ' ', '\t', '\n', '\r':
			d.pos++
		default:
			return
		}
	}
}

func (d *jsonDecoder) consume(c byte) bool {
	if d.pos < len(d.data) && d.data[d.pos] == c {
		d.pos++
		return true
	}
	return false
}

func (d *jsonDecoder) end() error {
	d.space()
	if d.pos != len(d.data) {
		return errBadJSON
	}
	return nil
}

// str parses one JSON string, escapes included.
func (d *jsonDecoder) str() (string, error) {
	if !d.consume('"') {
		return "", errBadJSON
	}
	var b []byte
	for d.pos < len(d.data) {
		c := d.data[d.pos]
		switch {
		case c == '"':
			d.pos++
			return string(b), nil
		case c < 0x20:
			return "", errBadJSON
		case c >= utf8.RuneSelf:
			// Invalid UTF-8 becomes U+FFFD, as in encoding/json.
			r, size := utf8.DecodeRune(d.data[d.pos:])
			b = utf8.AppendRune(b, r)
			d.pos += size
			continue
		case c != '\\':
			b = append(b, c)
			d.pos++
			continue
		}
		// An escape sequence.
		if d.pos+1 >= len(d.data) {
			return "", errBadJSON
		}
		e := d.data[d.pos+1]
		d.pos += 2
		switch e {
		case '"', '\\', '/':
			b = append(b, e)
		case 'b':
			b = append(b, '\b')
		case 'f':
			b = append(b, '\f')
		case 'n':
			b = append(b, '\n')
		case 'r':
			b = append(b, '\r')
		case 't':
			b = append(b, '\t')
		case 'u':
			r, ok := d.hex4()
			if !ok {
				return "", errBadJSON
			}
			if utf16.IsSurrogate(r) {
				// A high surrogate pairs with a following \uXXXX low one;
				// anything unpaired becomes U+FFFD, as in encoding/json.
				save := d.pos
				if d.consume('\\') && d.consume('u') {
					if r2, ok := d.hex4(); ok {
						if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
							b = utf8.AppendRune(b, dec)
							continue
						}
					}
				}
				d.pos = save
				r = utf8.RuneError
			}
			b = utf8.AppendRune(b, r)
		default:
			return "", errBadJSON
		}
	}
	return "", errBadJSON
}

func (d *jsonDecoder) hex4() (rune, bool) {
	if d.pos+4 > len(d.data) {
		return 0, false
	}
	v, err := strconv.ParseUint(string(d.data[d.pos:d.pos+4]), 16, 32)
	if err != nil {
		return 0, false
	}
	d.pos += 4
	return rune(v), true
}
