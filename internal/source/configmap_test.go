package source

import (
	"testing"
)

func TestConfigMap(t *testing.T) {
	tests := []struct {
		name   string
		binary map[string][]byte
		data   map[string]string
		key    string
		kind   error
		want   string
	}{
		{name: "binaryData", binary: map[string][]byte{"plugin.wasm": module}, key: "plugin.wasm"},
		{name: "data", data: map[string]string{"plugin.wasm": string(module)}, key: "plugin.wasm"},
		{name: "missing key lists keys", binary: map[string][]byte{"a.wasm": module}, data: map[string]string{"readme": "x"},
			key: "plugin.wasm", kind: ErrNotFound, want: `key "plugin.wasm" not found (it has a.wasm, readme)`},
		{name: "empty configmap", key: "plugin.wasm", kind: ErrNotFound, want: "it has no keys"},
		{name: "no key", binary: map[string][]byte{"a.wasm": module}, kind: ErrInvalid, want: "no key given"},
		{name: "not wasm", data: map[string]string{"plugin.wasm": "hello"}, key: "plugin.wasm", kind: ErrNotWasm, want: `starts with 0x68656c6c,`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var f Fetcher
			a, err := f.ConfigMap("default/plugins", tc.binary, tc.data, tc.key)
			if tc.kind == nil {
				if err != nil {
					t.Fatal(err)
				}
				if a.Source != "configmap:default/plugins#plugin.wasm" || string(a.Data) != string(module) {
					t.Fatalf("artifact = %+v", a)
				}
				return
			}
			checkErr(t, err, tc.kind, tc.want, false)
		})
	}
}

func TestCheckDigest(t *testing.T) {
	a := newArtifact(module, "x")
	tests := []struct {
		name, pin, got string
		mismatch, bad  bool
	}{
		{name: "no pin", got: a.Digest},
		{name: "bare hex", pin: hexOf(a.Digest), got: a.Digest},
		{name: "prefixed upper", pin: "sha256:" + stringsToUpper(hexOf(a.Digest)), got: a.Digest},
		{name: "mismatch", pin: "sha256:" + zeros, got: a.Digest, mismatch: true},
		{name: "short pin", pin: "abc", got: a.Digest, bad: true},
		{name: "non hex pin", pin: "z" + zeros[1:], got: a.Digest, bad: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckDigest(tc.pin, tc.got)
			switch {
			case tc.mismatch:
				var dm *DigestMismatchError
				if !errorsAs(err, &dm) || !errorsIs(err, ErrDigestMismatch) {
					t.Fatalf("err = %v", err)
				}
				if dm.Expected != "sha256:"+zeros || dm.Got != a.Digest {
					t.Fatalf("mismatch = %+v", dm)
				}
				if !contains(err.Error(), "set spec.sha256 to "+hexOf(a.Digest)) {
					t.Fatalf("message %q does not say what to do", err)
				}
			case tc.bad:
				if !errorsIs(err, ErrInvalid) || !contains(err.Error(), "must be 64 hex digits") {
					t.Fatalf("err = %v", err)
				}
			default:
				if err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}
