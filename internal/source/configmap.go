package source

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// ConfigMap returns the module stored under key in a ConfigMap's binaryData
// (or, failing that, data). ref names the ConfigMap as namespace/name for
// messages and the artifact's Source. A missing key is ErrNotFound and the
// message lists the keys that do exist.
func (f *Fetcher) ConfigMap(ref string, binaryData map[string][]byte, data map[string]string, key string) (*Artifact, error) {
	start := time.Now()
	a, err := configMap(ref, binaryData, data, key)
	f.observe("configMap", start, a, err)
	return a, err
}

func configMap(ref string, binaryData map[string][]byte, data map[string]string, key string) (*Artifact, error) {
	fail := func(kind error, msg string) error {
		return &Error{Type: "configMap", Ref: "ConfigMap " + ref, Kind: kind, Msg: msg}
	}
	if key == "" {
		return nil, fail(ErrInvalid, "no key given; set spec.source.configMap.key to the binaryData key that holds the module")
	}
	b, ok := binaryData[key]
	if !ok {
		s, inData := data[key]
		if !inData {
			keys := make([]string, 0, len(binaryData)+len(data))
			for k := range binaryData {
				keys = append(keys, k)
			}
			for k := range data {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			have := "it has no keys"
			if len(keys) > 0 {
				have = "it has " + strings.Join(keys, ", ")
			}
			return nil, fail(ErrNotFound, fmt.Sprintf("key %q not found (%s); store the module under binaryData.%s or fix spec.source.configMap.key", key, have, key))
		}
		b = []byte(s)
	}
	if msg, ok := checkWasm(b); !ok {
		return nil, fail(ErrNotWasm, fmt.Sprintf("key %q: %s; store the .wasm file with kubectl create configmap --from-file", key, msg))
	}
	return newArtifact(b, "configmap:"+ref+"#"+key), nil
}
