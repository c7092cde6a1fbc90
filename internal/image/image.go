package image

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"path"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// What the Dockerfile's final stage sets; TestDockerfileMatches reads the Dockerfile and compares.
const (
	// BinaryPath is where the manager binary lives in the image.
	BinaryPath = "/manager"
	// User is the image's user and group: distroless's nonroot, which the chart's pod security context
	// also sets.
	User = "65532:65532"
	// Home is the nonroot user's home and the working directory, as in distroless static:nonroot.
	Home = "/home/nonroot"
	// CABundle is where the CA certificates go, as in distroless (Go's crypto/x509 reads this path).
	CABundle = "/etc/ssl/certs/ca-certificates.crt"
)

// Entrypoint is the image's entrypoint: the manager, whose first argument is the subcommand.
var Entrypoint = []string{BinaryPath}

// epoch is the time of every file and of the image: the image's digest depends on its inputs only.
var epoch = time.Unix(0, 0).UTC()

// File is one regular file or directory of a layer.
type File struct {
	Path     string // absolute
	Mode     int64  // permission bits; with Dir, a directory
	Dir      bool
	UID, GID int
	Data     []byte
}

// Manager returns the manager image: binary (a static linux/amd64 manager) at BinaryPath, run as User,
// with caBundle (PEM; may be empty) at CABundle.
func Manager(binary, caBundle []byte) (v1.Image, error) {
	files := []File{
		{Path: "/etc", Dir: true, Mode: 0o755},
		{Path: "/etc/passwd", Mode: 0o644, Data: []byte("root:x:0:0:root:/root:/sbin/nologin\n" +
			"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")},
		{Path: "/etc/group", Mode: 0o644, Data: []byte("root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n")},
		{Path: "/home", Dir: true, Mode: 0o755},
		{Path: Home, Dir: true, Mode: 0o700, UID: 65532, GID: 65532},
		{Path: "/tmp", Dir: true, Mode: 0o1777},
	}
	if len(caBundle) > 0 {
		files = append(files, File{Path: "/etc/ssl", Dir: true, Mode: 0o755}, File{Path: "/etc/ssl/certs", Dir: true, Mode: 0o755},
			File{Path: CABundle, Mode: 0o644, Data: caBundle})
	}
	files = append(files, File{Path: BinaryPath, Mode: 0o755, Data: binary})
	return Build(files, v1.Config{
		Entrypoint: Entrypoint,
		User:       User,
		WorkingDir: Home,
		Env:        []string{"PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin", "SSL_CERT_FILE=" + CABundle},
	})
}

// Static returns an image of one static binary at binPath, its entrypoint, run as user ("uid:gid"), with
// a /tmp: for the pause image and test programs.
func Static(binary []byte, binPath, user string) (v1.Image, error) {
	return Build([]File{{Path: "/tmp", Dir: true, Mode: 0o1777}, {Path: binPath, Mode: 0o755, Data: binary}},
		v1.Config{Entrypoint: []string{binPath}, User: user, Env: []string{"PATH=/"}})
}

// Build returns a linux/amd64 image of one layer holding files, with cfg.
func Build(files []File, cfg v1.Config) (v1.Image, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		if !path.IsAbs(f.Path) {
			return nil, fmt.Errorf("image: file path %q is not absolute", f.Path)
		}
		h := &tar.Header{Name: f.Path[1:], Mode: f.Mode, Uid: f.UID, Gid: f.GID, ModTime: epoch, Typeflag: tar.TypeReg, Size: int64(len(f.Data))}
		if f.Dir {
			h.Name, h.Typeflag, h.Size = h.Name+"/", tar.TypeDir, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("image: %s: %w", f.Path, err)
		}
		if _, err := tw.Write(f.Data); err != nil {
			return nil, fmt.Errorf("image: %s: %w", f.Path, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		return nil, fmt.Errorf("image: layer: %w", err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Created = "linux", "amd64", v1.Time{Time: epoch}
	cf.Config = cfg
	return mutate.ConfigFile(img, cf)
}

// Write writes img as a tarball that `ctr images import` and `docker load` read, tagged tag.
func Write(file, tag string, img v1.Image) error {
	ref, err := name.NewTag(tag)
	if err != nil {
		return fmt.Errorf("image: tag %q: %w", tag, err)
	}
	if err := tarball.WriteToFile(file, ref, img); err != nil {
		return fmt.Errorf("image: write %s: %w", file, err)
	}
	return nil
}
