package image

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// TestDockerfileMatches checks that the image built here and the Dockerfile users build with Docker run the
// same way: the binary is copied to BinaryPath, the user is User, the entrypoint is Entrypoint, the base is
// distroless static:nonroot (whose files Manager reproduces), and the binary is built with the Makefile's
// image flags.
func TestDockerfileMatches(t *testing.T) {
	root := filepath.Join("..", "..")
	df, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	stages := regexp.MustCompile(`(?m)^FROM `).Split(string(df), -1)
	final := "FROM " + stages[len(stages)-1]
	directive := func(name string) []string {
		var out []string
		for _, line := range strings.Split(final, "\n") {
			if v, ok := strings.CutPrefix(line, name+" "); ok {
				out = append(out, strings.TrimSpace(v))
			}
		}
		return out
	}
	if got := directive("FROM"); !slices.Equal(got, []string{"gcr.io/distroless/static:nonroot"}) {
		t.Errorf("final stage FROM %v; Manager reproduces gcr.io/distroless/static:nonroot", got)
	}
	if got := directive("USER"); !slices.Equal(got, []string{User}) {
		t.Errorf("Dockerfile USER %v, image.User %q", got, User)
	}
	var ep []string
	if got := directive("ENTRYPOINT"); len(got) != 1 || json.Unmarshal([]byte(got[0]), &ep) != nil || !slices.Equal(ep, Entrypoint) {
		t.Errorf("Dockerfile ENTRYPOINT %v, image.Entrypoint %q", got, Entrypoint)
	}
	if got := directive("COPY"); !slices.Equal(got, []string{"--from=build /out/manager " + BinaryPath}) {
		t.Errorf("Dockerfile COPY %v, want the binary at %s", got, BinaryPath)
	}
	// The same go build: flags of the Dockerfile's build stage and of the Makefile's image target.
	build := regexp.MustCompile(`CGO_ENABLED=0 .*\n.*go build (.*) -o /out/manager ./cmd/manager`).FindStringSubmatch(string(df))
	if build == nil {
		t.Fatal("Dockerfile: no 'CGO_ENABLED=0 ... go build FLAGS -o /out/manager ./cmd/manager'")
	}
	mk, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build " + build[1] + " -o $(IMAGES)/manager ./cmd/manager"; !strings.Contains(string(mk), want) {
		t.Errorf("the Makefile's image build differs from the Dockerfile's: want a line with\n%s", want)
	}
}

// TestManager reads the written tarball back as `ctr images import` would: the configuration the pods run
// with and the files they see.
func TestManager(t *testing.T) {
	img, err := Manager([]byte("\x7fELF binary"), []byte("-----BEGIN CERTIFICATE-----\n"))
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "manager.tar")
	if err := Write(file, "localhost/wasm-operator:test", img); err != nil {
		t.Fatal(err)
	}
	back, err := tarball.ImageFromPath(file, nil)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := back.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != "amd64" || cf.Config.User != "65532:65532" ||
		!slices.Equal(cf.Config.Entrypoint, []string{"/manager"}) || cf.Config.WorkingDir != "/home/nonroot" {
		t.Errorf("config: %s/%s user %q entrypoint %q workdir %q", cf.OS, cf.Architecture, cf.Config.User, cf.Config.Entrypoint, cf.Config.WorkingDir)
	}
	layers, err := back.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers: %d, %v", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got := map[string]*tar.Header{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got["/"+strings.TrimSuffix(h.Name, "/")] = h
	}
	for path, want := range map[string]struct {
		mode     int64
		uid, gid int
	}{
		"/manager": {0o755, 0, 0}, "/tmp": {0o1777, 0, 0}, "/home/nonroot": {0o700, 65532, 65532},
		"/etc/passwd": {0o644, 0, 0}, CABundle: {0o644, 0, 0},
	} {
		h := got[path]
		if h == nil {
			t.Errorf("no %s in the image", path)
			continue
		}
		if h.Mode != want.mode || h.Uid != want.uid || h.Gid != want.gid {
			t.Errorf("%s: mode %o uid %d gid %d, want %o %d %d", path, h.Mode, h.Uid, h.Gid, want.mode, want.uid, want.gid)
		}
	}
	if d1, _ := img.Digest(); d1.String() == "" {
		t.Error("no digest")
	} else if again, _ := Manager([]byte("\x7fELF binary"), []byte("-----BEGIN CERTIFICATE-----\n")); again != nil {
		if d2, _ := again.Digest(); d1 != d2 {
			t.Errorf("the same inputs gave digests %s and %s: the image is not reproducible", d1, d2)
		}
	}
}
