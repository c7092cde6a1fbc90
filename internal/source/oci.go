package source

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Media types of a layer that holds a WebAssembly module: the one of the wasm
// OCI artifact format, and the one Istio and Solo's wasme use.
const (
	MediaTypeWasmLayer       = "application/vnd.wasm.content.layer.v1+wasm"
	MediaTypeModuleWasmLayer = "application/vnd.module.wasm.content.layer.v1+wasm"
)

// OCIOptions configure an OCI fetch. The zero value uses the defaults and
// pulls anonymously over HTTPS.
type OCIOptions struct {
	// DockerConfigJSON is the .dockerconfigjson value of a pull secret of type
	// kubernetes.io/dockerconfigjson. Registries it has no entry for are
	// pulled from anonymously.
	DockerConfigJSON []byte
	// Insecure allows plain HTTP (and self-signed HTTPS) to the registry.
	Insecure bool
	// CAPEM holds PEM certificates trusted in addition to the system roots.
	CAPEM []byte
	// ConnectTimeout, ReadTimeout, Retries and Backoff behave as in
	// HTTPOptions.
	ConnectTimeout time.Duration
	ReadTimeout    time.Duration
	Retries        int
	Backoff        time.Duration
	// MaxBytes caps the module size. Default DefaultMaxBytes (256 MiB).
	MaxBytes int64
}

// OCI fetches a module from an OCI registry. image is registry/repository
// with a :tag or @sha256:digest. Two forms are accepted: a wasm OCI artifact
// (a layer of media type MediaTypeWasmLayer or MediaTypeModuleWasmLayer) and
// a plain image whose single layer is a tar (optionally gzipped) holding one
// .wasm file (or several of which one is named plugin.wasm), as Istio
// accepts. An image index is resolved to its wasi/wasm platform entry, or to
// its only entry. The artifact's Source is repository@sha256:<digest> of what
// the tag pointed at, so a tag is resolved once and can be pinned.
func (f *Fetcher) OCI(ctx context.Context, image string, opts OCIOptions) (*Artifact, error) {
	start := time.Now()
	a, err := fetchOCI(ctx, image, opts, f.Guard)
	f.observe("oci", start, a, err)
	return a, err
}

func fetchOCI(ctx context.Context, image string, opts OCIOptions, guard *Guard) (*Artifact, error) {
	fail := func(kind error, msg string) *Error {
		return &Error{Type: "oci", Ref: image, Kind: kind, Msg: msg}
	}
	var nameOpts []name.Option
	if opts.Insecure {
		nameOpts = append(nameOpts, name.Insecure)
	}
	ref, err := name.ParseReference(image, nameOpts...)
	if err != nil {
		e := fail(ErrInvalid, "not a valid image reference; use registry/repository:tag or registry/repository@sha256:<digest>")
		e.Err = err
		return nil, e
	}
	keychain := authn.Keychain(authn.NewMultiKeychain())
	if len(opts.DockerConfigJSON) > 0 {
		kc, err := parseDockerConfig(opts.DockerConfigJSON)
		if err != nil {
			return nil, fail(ErrInvalid, err.Error())
		}
		keychain = kc
	}
	no := netOptions{caPEM: opts.CAPEM, connectTimeout: opts.ConnectTimeout, readTimeout: opts.ReadTimeout,
		retries: opts.Retries, backoff: opts.Backoff, guard: guard}
	no.defaults()
	max := opts.MaxBytes
	if max <= 0 {
		max = DefaultMaxBytes
	}
	tr, err := newTransport(no)
	if err != nil {
		return nil, fail(ErrInvalid, err.Error())
	}
	if opts.Insecure {
		if tr.TLSClientConfig == nil {
			tr.TLSClientConfig = newTLSConfig()
		}
		tr.TLSClientConfig.InsecureSkipVerify = true
	}
	defer tr.CloseIdleConnections()
	ropts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithTransport(guard.wrap(tr)),
		remote.WithAuthFromKeychain(keychain),
		// Retries are done here, with the same policy as for HTTP sources.
		remote.WithRetryBackoff(remote.Backoff{Steps: 1}),
		remote.WithRetryPredicate(func(error) bool { return false }),
		remote.WithRetryStatusCodes(),
	}
	o := &ociFetch{ref: ref, image: image, opts: ropts, max: max, net: no}
	return retrying(ctx, no, o.once)
}

type ociFetch struct {
	ref   name.Reference
	image string
	opts  []remote.Option
	max   int64
	net   netOptions
}

func (o *ociFetch) fail(kind error, msg string) *Error {
	return &Error{Type: "oci", Ref: o.image, Kind: kind, Msg: msg}
}

func (o *ociFetch) once() (*Artifact, error) {
	desc, err := remote.Get(o.ref, o.opts...)
	if err != nil {
		return nil, o.classify(err, "manifest")
	}
	identity := o.ref.Context().Name() + "@" + desc.Digest.String()
	manifest := desc.Manifest
	mt := desc.MediaType
	if mt.IsIndex() {
		child, err := o.pickFromIndex(desc.Manifest)
		if err != nil {
			return nil, err
		}
		cd, err := remote.Get(o.ref.Context().Digest(child.String()), o.opts...)
		if err != nil {
			return nil, o.classify(err, "manifest "+child.String())
		}
		manifest, mt = cd.Manifest, cd.MediaType
	}
	if !mt.IsImage() {
		return nil, o.fail(ErrNotWasm, fmt.Sprintf("the reference points at %s, not an image or a wasm artifact", knownMediaType(mt)))
	}
	m, err := v1.ParseManifest(bytes.NewReader(manifest))
	if err != nil {
		// Not e.Err: a JSON error quotes the content.
		return nil, o.fail(nil, "the registry returned a manifest that cannot be parsed")
	}
	layer, raw, err := o.pickLayer(m)
	if err != nil {
		return nil, err
	}
	limit := o.max
	if !raw {
		// a tar adds headers and padding around the file
		limit = o.max + 1<<20
	}
	if layer.Size > limit {
		return nil, o.fail(ErrTooLarge, fmt.Sprintf("the module layer is %d bytes, more than the %d byte limit; use a smaller module or raise the limit", layer.Size, o.max))
	}
	l, err := remote.Layer(o.ref.Context().Digest(layer.Digest.String()), o.opts...)
	if err != nil {
		return nil, o.classify(err, "layer "+layer.Digest.String())
	}
	rc, err := l.Compressed()
	if err != nil {
		return nil, o.classify(err, "layer "+layer.Digest.String())
	}
	defer rc.Close()
	blob, ok, err := readCapped(rc, limit, layer.Size)
	if err != nil {
		return nil, o.classify(err, "layer "+layer.Digest.String())
	}
	if !ok {
		return nil, o.fail(ErrTooLarge, fmt.Sprintf("the module layer is larger than the %d byte limit; use a smaller module or raise the limit", o.max))
	}
	if raw && bytes.HasPrefix(blob, wasmMagic) {
		if int64(len(blob)) > o.max {
			return nil, o.fail(ErrTooLarge, fmt.Sprintf("the module is larger than the %d byte limit; use a smaller module or raise the limit", o.max))
		}
		return newArtifact(blob, identity), nil
	}
	data, err := o.fromTar(blob)
	if err != nil {
		return nil, err
	}
	return newArtifact(data, identity), nil
}

func (o *ociFetch) pickFromIndex(raw []byte) (v1.Hash, error) {
	idx, err := v1.ParseIndexManifest(bytes.NewReader(raw))
	if err != nil {
		return v1.Hash{}, o.fail(nil, "the registry returned an image index that cannot be parsed")
	}
	for _, m := range idx.Manifests {
		if p := m.Platform; p != nil && (p.Architecture == "wasm" || strings.HasPrefix(p.OS, "wasi")) {
			return m.Digest, nil
		}
	}
	if len(idx.Manifests) == 1 {
		return idx.Manifests[0].Digest, nil
	}
	return v1.Hash{}, o.fail(ErrNotWasm, fmt.Sprintf("the image index lists %d manifests and none for platform wasi/wasm; reference the wasm image by its digest", len(idx.Manifests)))
}

// pickLayer finds the layer holding the module; raw is true for a layer of a
// wasm media type.
func (o *ociFetch) pickLayer(m *v1.Manifest) (v1.Descriptor, bool, error) {
	var wasm []v1.Descriptor
	for _, l := range m.Layers {
		if l.MediaType == MediaTypeWasmLayer || l.MediaType == MediaTypeModuleWasmLayer {
			wasm = append(wasm, l)
		}
	}
	switch {
	case len(wasm) == 1:
		return wasm[0], true, nil
	case len(wasm) > 1:
		return v1.Descriptor{}, false, o.fail(ErrNotWasm, fmt.Sprintf("the artifact has %d wasm layers; push exactly one module per artifact", len(wasm)))
	case len(m.Layers) == 1:
		return m.Layers[0], false, nil
	}
	return v1.Descriptor{}, false, o.fail(ErrNotWasm, fmt.Sprintf(
		"the image has %d layers and none of media type %s; push the module as a wasm OCI artifact, or as an image with a single layer holding the .wasm file",
		len(m.Layers), MediaTypeWasmLayer))
}

// fromTar extracts the module from an image layer: a tar, possibly gzipped,
// holding one .wasm file, or several of which one is named plugin.wasm.
func (o *ociFetch) fromTar(blob []byte) ([]byte, error) {
	open := func() (*tar.Reader, error) {
		var r io.Reader = bytes.NewReader(blob)
		if bytes.HasPrefix(blob, []byte{0x1f, 0x8b}) {
			gz, err := gzip.NewReader(r)
			if err != nil {
				return nil, err
			}
			r = gz
		}
		// decompressing more than this is a bomb, not a module
		return tar.NewReader(io.LimitReader(r, 4*o.max+1<<20)), nil
	}
	notWasm := func(msg string, err error) *Error {
		e := o.fail(ErrNotWasm, msg+"; push the module as a wasm OCI artifact, or as an image with a single layer holding the .wasm file")
		e.Err = err
		return e
	}
	tr, err := open()
	if err != nil {
		return nil, notWasm("the layer is neither a WebAssembly module nor a readable tar", err)
	}
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			if len(blob) >= 4 && !bytes.HasPrefix(blob, []byte{0x1f, 0x8b}) && len(names) == 0 {
				msg, _ := checkWasm(blob)
				return nil, notWasm(msg, nil)
			}
			return nil, notWasm("the layer is neither a WebAssembly module nor a readable tar", err)
		}
		if h.Typeflag == tar.TypeReg && strings.HasSuffix(h.Name, ".wasm") {
			names = append(names, h.Name)
		}
	}
	want := ""
	switch {
	case len(names) == 1:
		want = names[0]
	case len(names) == 0:
		return nil, notWasm("the image layer holds no .wasm file", nil)
	default:
		for _, n := range names {
			if path.Base(n) == "plugin.wasm" {
				if want != "" {
					want = ""
					break
				}
				want = n
			}
		}
		if want == "" {
			sort.Strings(names)
			return nil, notWasm(fmt.Sprintf("the image layer holds several .wasm files (%s) and not exactly one plugin.wasm", strings.Join(names, ", ")), nil)
		}
	}
	tr, _ = open()
	for {
		h, err := tr.Next()
		if err != nil {
			return nil, notWasm("the image layer could not be read again", err)
		}
		if h.Name != want || h.Typeflag != tar.TypeReg {
			continue
		}
		if h.Size > o.max {
			return nil, o.fail(ErrTooLarge, fmt.Sprintf("%s is %d bytes, more than the %d byte limit; use a smaller module or raise the limit", want, h.Size, o.max))
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			return nil, notWasm("the image layer could not be read", err)
		}
		if msg, ok := checkWasm(data); !ok {
			return nil, notWasm(want+": "+msg, nil)
		}
		return data, nil
	}
}

// classify turns a registry or network error into an *Error.
func (o *ociFetch) classify(err error, what string) *Error {
	var te *transport.Error
	if !errors.As(err, &te) {
		e := classifyNetErr("oci", o.image, err, o.net)
		return e
	}
	// The registry's error text is not kept: a source pointed at an internal endpoint would have its
	// answer copied into the plugin's status (transport.Error quotes bodies it cannot parse).
	e := o.fail(nil, "")
	codes := map[transport.ErrorCode]bool{}
	for _, d := range te.Errors {
		codes[d.Code] = true
	}
	status := fmt.Sprintf("registry answered %d %s for the %s", te.StatusCode, http.StatusText(te.StatusCode), what)
	if known := knownCodes(codes); known != "" {
		status += " (" + known + ")"
	}
	switch {
	case te.StatusCode == http.StatusNotFound || codes[transport.ManifestUnknownErrorCode] ||
		codes[transport.NameUnknownErrorCode] || codes[transport.BlobUnknownErrorCode]:
		e.Kind, e.Msg = ErrNotFound, status+"; check the repository and tag in spec.source.oci.image"
	case te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden ||
		codes[transport.UnauthorizedErrorCode] || codes[transport.DeniedErrorCode]:
		e.Kind, e.Msg = ErrUnauthorized, status+"; check that spec.source.oci.pullSecretRef names a kubernetes.io/dockerconfigjson secret with valid credentials for this registry"
	case te.StatusCode == http.StatusTooManyRequests || te.StatusCode == http.StatusRequestTimeout ||
		codes[transport.TooManyRequestsErrorCode]:
		e.Transient, e.Msg = true, status+"; will retry later"
	case te.StatusCode >= 500:
		e.Transient, e.retry, e.Msg = true, true, status+"; will retry"
	default:
		e.Msg = status + "; check spec.source.oci"
	}
	return e
}

// dockerKeychain resolves credentials from a .dockerconfigjson.
type dockerKeychain map[string]authn.AuthConfig

type dockerConfigJSON struct {
	Auths map[string]struct {
		Auth          string `json:"auth"`
		Username      string `json:"username"`
		Password      string `json:"password"`
		IdentityToken string `json:"identitytoken"`
		RegistryToken string `json:"registrytoken"`
	} `json:"auths"`
}

func parseDockerConfig(b []byte) (dockerKeychain, error) {
	var c dockerConfigJSON
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("the pull secret's .dockerconfigjson is not valid JSON (%v); recreate it with kubectl create secret docker-registry", err)
	}
	if c.Auths == nil {
		return nil, errors.New("the pull secret's .dockerconfigjson has no \"auths\"; the secret must be of type kubernetes.io/dockerconfigjson (kubectl create secret docker-registry)")
	}
	kc := dockerKeychain{}
	for reg, a := range c.Auths {
		ac := authn.AuthConfig{Username: a.Username, Password: a.Password,
			IdentityToken: a.IdentityToken, RegistryToken: a.RegistryToken}
		if a.Auth != "" {
			dec, err := base64.StdEncoding.DecodeString(a.Auth)
			if err != nil {
				return nil, fmt.Errorf("the pull secret's entry for %q has an \"auth\" that is not base64 of user:password; recreate the secret", reg)
			}
			user, pass, ok := strings.Cut(string(dec), ":")
			if !ok {
				return nil, fmt.Errorf("the pull secret's entry for %q has an \"auth\" that is not base64 of user:password; recreate the secret", reg)
			}
			ac.Username, ac.Password = user, pass
		}
		kc[registryHost(reg)] = ac
	}
	return kc, nil
}

// registryHost reduces a .dockerconfigjson key ("https://index.docker.io/v1/",
// "registry.example.com:5000/some/path") to the registry host.
func registryHost(key string) string {
	key = strings.ToLower(key)
	key = strings.TrimPrefix(strings.TrimPrefix(key, "https://"), "http://")
	key, _, _ = strings.Cut(key, "/")
	switch key {
	case "docker.io", "registry-1.docker.io", "index.docker.io":
		return name.DefaultRegistry
	}
	return key
}

// Resolve implements authn.Keychain; "*.example.com" keys match subdomains.
func (k dockerKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	host := registryHost(r.RegistryStr())
	if ac, ok := k[host]; ok {
		return authn.FromConfig(ac), nil
	}
	for pattern, ac := range k {
		if strings.HasPrefix(pattern, "*.") {
			if ok, _ := path.Match(pattern, host); ok {
				return authn.FromConfig(ac), nil
			}
		}
	}
	return authn.Anonymous, nil
}

// knownMediaType names a media type the way a message may show it: quoted when it is one of the
// well-known OCI and Docker types, else only "another media type", since the type comes from the
// answering server and anything it sends could be echoed to whoever reads the status.
func knownMediaType(mt types.MediaType) string {
	switch mt {
	case types.OCIManifestSchema1, types.OCIImageIndex, types.OCIConfigJSON, types.OCILayer,
		types.DockerManifestSchema1, types.DockerManifestSchema1Signed, types.DockerManifestSchema2,
		types.DockerManifestList, types.DockerConfigJSON, types.DockerLayer:
		return fmt.Sprintf("a %q", string(mt))
	}
	return "another media type"
}

// registryCodes are the error codes of the distribution spec; only these are repeated in messages.
var registryCodes = []transport.ErrorCode{
	transport.BlobUnknownErrorCode, transport.BlobUploadInvalidErrorCode, transport.BlobUploadUnknownErrorCode,
	transport.DigestInvalidErrorCode, transport.ManifestBlobUnknownErrorCode, transport.ManifestInvalidErrorCode,
	transport.ManifestUnknownErrorCode, transport.ManifestUnverifiedErrorCode, transport.NameInvalidErrorCode,
	transport.NameUnknownErrorCode, transport.SizeInvalidErrorCode, transport.TagInvalidErrorCode,
	transport.UnauthorizedErrorCode, transport.DeniedErrorCode, transport.UnsupportedErrorCode,
	transport.TooManyRequestsErrorCode, transport.UnknownErrorCode, transport.UnavailableErrorCode,
}

func knownCodes(got map[transport.ErrorCode]bool) string {
	var out []string
	for _, c := range registryCodes {
		if got[c] {
			out = append(out, string(c))
		}
	}
	return strings.Join(out, ", ")
}
