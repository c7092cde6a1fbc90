package source

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// wasmArtifact builds a wasm OCI artifact holding data in a layer of the given
// media type.
func wasmArtifact(t *testing.T, data []byte, mediaType string) v1.Image {
	t.Helper()
	img, err := mutate.Append(empty.Image, mutate.Addendum{Layer: static.NewLayer(data, types.MediaType(mediaType))})
	if err != nil {
		t.Fatal(err)
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	return mutate.ConfigMediaType(img, "application/vnd.wasm.config.v1+json")
}

// tarImage builds a plain image with one gzipped tar layer holding files.
func tarImage(t *testing.T, files map[string][]byte) v1.Image {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755})
	for n, b := range files {
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write(b)
	}
	tw.Close()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf.Bytes())), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

type testRegistry struct {
	*httptest.Server
	manifestGets atomic.Int32
	fail503      atomic.Int32 // manifest GETs still to fail
	user, pass   string
}

func newRegistry(t *testing.T, user, pass string) *testRegistry {
	r := &testRegistry{user: user, pass: pass}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if r.user != "" && req.Method == http.MethodGet {
			u, p, ok := req.BasicAuth()
			if !ok || u != r.user || p != r.pass {
				w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
		}
		if req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/manifests/") {
			r.manifestGets.Add(1)
			if r.fail503.Add(-1) >= 0 {
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
		}
		reg.ServeHTTP(w, req)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *testRegistry) host() string { return strings.TrimPrefix(r.URL, "http://") }

// push writes img to the registry, bypassing its authentication.
func (r *testRegistry) push(t *testing.T, ref string, img v1.Image) string {
	t.Helper()
	user := r.user
	r.user = ""
	defer func() { r.user = user }()
	full := r.host() + "/" + ref
	pr, err := name.ParseReference(full)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(pr, img); err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return pr.Context().Name() + "@" + d.String()
}

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

func TestOCIForms(t *testing.T) {
	reg := newRegistry(t, "", "")
	other := append(append([]byte{}, module...), 0, 1, 2)
	tests := []struct {
		name string
		img  v1.Image
		want []byte
	}{
		{"wasm artifact", wasmArtifact(t, module, MediaTypeWasmLayer), module},
		{"istio compat artifact", wasmArtifact(t, other, MediaTypeModuleWasmLayer), other},
		{"image with one tar layer", tarImage(t, map[string][]byte{"plugin.wasm": module, "etc/readme": []byte("x")}), module},
		{"image with a differently named .wasm", tarImage(t, map[string][]byte{"filter.wasm": other}), other},
		{"image with several .wasm and one plugin.wasm", tarImage(t, map[string][]byte{"plugin.wasm": module, "lib/other.wasm": other}), module},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := reg.push(t, fmt.Sprintf("plugins/p%d:v1", i), tc.img)
			var f Fetcher
			a, err := f.OCI(context.Background(), fmt.Sprintf("%s/plugins/p%d:v1", reg.host(), i), OCIOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(a.Data, tc.want) || a.Digest != digestOf(tc.want) {
				t.Fatalf("got %q %s", a.Data, a.Digest)
			}
			if a.Source != want {
				t.Fatalf("source = %s, want %s", a.Source, want)
			}
			// the resolved identity fetches the same module
			b, err := f.OCI(context.Background(), a.Source, OCIOptions{Insecure: true})
			if err != nil || b.Digest != a.Digest || b.Source != a.Source {
				t.Fatalf("by digest: %v %+v", err, b)
			}
		})
	}
}

func TestOCITagMovesToNewDigest(t *testing.T) {
	reg := newRegistry(t, "", "")
	var f Fetcher
	image := reg.host() + "/plugins/moving:latest"
	first := reg.push(t, "plugins/moving:latest", wasmArtifact(t, module, MediaTypeWasmLayer))
	a, err := f.OCI(context.Background(), image, OCIOptions{})
	if err != nil || a.Source != first {
		t.Fatalf("%v %+v", err, a)
	}
	v2 := append(append([]byte{}, module...), 9)
	second := reg.push(t, "plugins/moving:latest", wasmArtifact(t, v2, MediaTypeWasmLayer))
	b, err := f.OCI(context.Background(), image, OCIOptions{})
	if err != nil || b.Source != second || b.Source == first || b.Digest != digestOf(v2) {
		t.Fatalf("%v %+v", err, b)
	}
}

func TestOCIIndex(t *testing.T) {
	reg := newRegistry(t, "", "")
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: tarImage(t, map[string][]byte{"x.txt": []byte("linux")}),
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: wasmArtifact(t, module, MediaTypeWasmLayer),
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "wasip1", Architecture: "wasm"}}},
	)
	ref, _ := name.ParseReference(reg.host() + "/plugins/multi:v1")
	if err := remote.WriteIndex(ref, idx); err != nil {
		t.Fatal(err)
	}
	d, _ := idx.Digest()
	var f Fetcher
	a, err := f.OCI(context.Background(), ref.String(), OCIOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if a.Source != ref.Context().Name()+"@"+d.String() || a.Digest != digestOf(module) {
		t.Fatalf("artifact %+v", a)
	}
}

func TestOCIFailures(t *testing.T) {
	reg := newRegistry(t, "", "")
	big := append(append([]byte{}, module...), make([]byte, 4096)...)
	reg.push(t, "bad/notwasm:v1", wasmArtifact(t, []byte("hello, not a module"), MediaTypeWasmLayer))
	reg.push(t, "bad/nowasmfile:v1", tarImage(t, map[string][]byte{"plugin.txt": []byte("x")}))
	reg.push(t, "bad/twowasm:v1", tarImage(t, map[string][]byte{"a.wasm": module, "b.wasm": module}))
	reg.push(t, "bad/wasmnamedwrong:v1", tarImage(t, map[string][]byte{"plugin.wasm": []byte("#!/bin/sh")}))
	twoLayers, _ := mutate.AppendLayers(tarImage(t, map[string][]byte{"a.txt": nil}), static.NewLayer([]byte("x"), types.DockerLayer))
	reg.push(t, "bad/twolayers:v1", twoLayers)
	twoWasm, _ := mutate.Append(wasmArtifact(t, module, MediaTypeWasmLayer), mutate.Addendum{Layer: static.NewLayer(module, MediaTypeWasmLayer)})
	reg.push(t, "bad/twowasmlayers:v1", twoWasm)
	reg.push(t, "big/artifact:v1", wasmArtifact(t, big, MediaTypeWasmLayer))
	reg.push(t, "big/image:v1", tarImage(t, map[string][]byte{"plugin.wasm": big}))

	tests := []struct {
		name, image string
		opts        OCIOptions
		kind        error
		want        string
	}{
		{"unknown tag", "bad/notwasm:v2", OCIOptions{}, ErrNotFound, "check the repository and tag"},
		{"unknown repository", "nothing/here:v1", OCIOptions{}, ErrNotFound, "404 Not Found"},
		{"wasm layer is not wasm", "bad/notwasm:v1", OCIOptions{}, ErrNotWasm, `starts with 0x68656c6c,`},
		{"image without .wasm", "bad/nowasmfile:v1", OCIOptions{}, ErrNotWasm, "holds no .wasm file"},
		{"image with two .wasm", "bad/twowasm:v1", OCIOptions{}, ErrNotWasm, "several .wasm files (a.wasm, b.wasm)"},
		{"plugin.wasm is a script", "bad/wasmnamedwrong:v1", OCIOptions{}, ErrNotWasm, `plugin.wasm: content is not a WebAssembly module (it starts with 0x23212f62,`},
		{"two layers none wasm", "bad/twolayers:v1", OCIOptions{}, ErrNotWasm, "the image has 2 layers and none of media type"},
		{"two wasm layers", "bad/twowasmlayers:v1", OCIOptions{}, ErrNotWasm, "has 2 wasm layers"},
		{"artifact too large", "big/artifact:v1", OCIOptions{MaxBytes: 1024}, ErrTooLarge, "more than the 1024 byte limit"},
		{"image too large", "big/image:v1", OCIOptions{MaxBytes: 1024}, ErrTooLarge, "plugin.wasm is 4104 bytes, more than the 1024 byte limit"},
		{"bad reference", "UPPER/Case::x", OCIOptions{}, ErrInvalid, "not a valid image reference"},
		{"pull secret not json", "bad/notwasm:v1", OCIOptions{DockerConfigJSON: []byte("{")}, ErrInvalid, "is not valid JSON"},
		{"pull secret without auths", "bad/notwasm:v1", OCIOptions{DockerConfigJSON: []byte(`{"reg":{}}`)}, ErrInvalid, `has no "auths"`},
		{"pull secret bad auth", "bad/notwasm:v1", OCIOptions{DockerConfigJSON: []byte(`{"auths":{"r.example":{"auth":"!!"}}}`)}, ErrInvalid, `entry for "r.example" has an "auth" that is not base64`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var f Fetcher
			image := tc.image
			if tc.kind != ErrInvalid || strings.Contains(tc.want, "secret") || strings.Contains(tc.want, "auth") {
				image = reg.host() + "/" + image
			}
			_, err := f.OCI(context.Background(), image, tc.opts)
			checkErr(t, err, tc.kind, tc.want, false)
		})
	}
}

func dockerConfig(host, user, pass string) []byte {
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
	return []byte(fmt.Sprintf(`{"auths":{"http://%s/v1/":{"auth":%q}}}`, host, auth))
}

func TestOCIPullSecret(t *testing.T) {
	reg := newRegistry(t, "puller", "s3cret")
	want := reg.push(t, "private/p:v1", wasmArtifact(t, module, MediaTypeWasmLayer))
	image := reg.host() + "/private/p:v1"
	tests := []struct {
		name   string
		secret []byte
		ok     bool
	}{
		{"no secret", nil, false},
		{"wrong password", dockerConfig(reg.host(), "puller", "nope"), false},
		{"secret for another registry", dockerConfig("other.example", "puller", "s3cret"), false},
		{"right secret", dockerConfig(reg.host(), "puller", "s3cret"), true},
		{"username and password fields", []byte(fmt.Sprintf(`{"auths":{%q:{"username":"puller","password":"s3cret"}}}`, reg.host())), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var f Fetcher
			a, err := f.OCI(context.Background(), image, OCIOptions{DockerConfigJSON: tc.secret, Insecure: true})
			if tc.ok {
				if err != nil || a.Source != want {
					t.Fatalf("%v %+v", err, a)
				}
				return
			}
			checkErr(t, err, ErrUnauthorized, "pullSecretRef names a kubernetes.io/dockerconfigjson secret", false)
			if strings.Contains(err.Error(), "s3cret") {
				t.Fatalf("error shows the password: %v", err)
			}
		})
	}
}

func TestOCIRetries(t *testing.T) {
	reg := newRegistry(t, "", "")
	reg.push(t, "plugins/flaky:v1", wasmArtifact(t, module, MediaTypeWasmLayer))
	image := reg.host() + "/plugins/flaky:v1"
	var f Fetcher

	reg.manifestGets.Store(0)
	reg.fail503.Store(2)
	if _, err := f.OCI(context.Background(), image, OCIOptions{Backoff: 1}); err != nil {
		t.Fatal(err)
	}
	if n := reg.manifestGets.Load(); n != 3 {
		t.Fatalf("manifest GETs = %d, want 3 (two 503s, then success)", n)
	}

	reg.manifestGets.Store(0)
	reg.fail503.Store(100)
	_, err := f.OCI(context.Background(), image, OCIOptions{Backoff: 1, Retries: 1})
	checkErr(t, err, nil, "registry answered 503 Service Unavailable for the manifest; will retry (gave up after 2 attempts)", true)
	if n := reg.manifestGets.Load(); n != 2 {
		t.Fatalf("manifest GETs = %d, want 2", n)
	}

	reg.fail503.Store(0)
	reg.manifestGets.Store(0)
	_, err = f.OCI(context.Background(), reg.host()+"/plugins/flaky:nope", OCIOptions{Backoff: 1})
	checkErr(t, err, ErrNotFound, "MANIFEST_UNKNOWN", false)
	if n := reg.manifestGets.Load(); n != 1 {
		t.Fatalf("a missing tag was requested %d times, want 1", n)
	}
}

func TestDockerKeychainHosts(t *testing.T) {
	tests := []struct{ key, want string }{
		{"https://index.docker.io/v1/", "index.docker.io"},
		{"docker.io", "index.docker.io"},
		{"registry.example.com:5000/some/path", "registry.example.com:5000"},
		{"HTTP://Registry.Example.com", "registry.example.com"},
	}
	for _, tc := range tests {
		if got := registryHost(tc.key); got != tc.want {
			t.Errorf("registryHost(%q) = %q, want %q", tc.key, got, tc.want)
		}
	}
}
