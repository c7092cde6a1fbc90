// Command image writes container images as tarballs for `ctr images import`, without Docker:
//
//	go run ./hack/image -manager bin/image/manager-linux -tag localhost/wasm-operator:dev -o bin/image/manager.tar
//	go run ./hack/image -bin bin/image/pause -path /pause -user 65535:65535 -tag registry.k8s.io/pause:3.10 -o bin/image/pause.tar
//
// -manager builds the manager image of internal/image (what the Dockerfile ships); -bin packs any static
// binary alone.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/wasm-operator/wasm-operator/internal/image"
)

func main() {
	manager := flag.String("manager", "", "the static manager binary: build the manager image")
	bin := flag.String("bin", "", "a static binary: build an image of it alone")
	path := flag.String("path", "/app", "with -bin: its path in the image, and the entrypoint")
	user := flag.String("user", "65532:65532", "with -bin: the image's uid:gid")
	ca := flag.String("ca", "/etc/ssl/certs/ca-certificates.crt", "with -manager: the CA bundle to include (skipped when missing)")
	tag := flag.String("tag", "", "the image reference, such as localhost/wasm-operator:dev")
	out := flag.String("o", "image.tar", "output tarball")
	flag.Parse()
	if err := run(*manager, *bin, *path, *user, *ca, *tag, *out); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(manager, bin, path, user, ca, tag, out string) error {
	if (manager == "") == (bin == "") || tag == "" {
		return errors.New("give -tag and one of -manager or -bin")
	}
	var img v1.Image
	if manager != "" {
		b, err := os.ReadFile(manager)
		if err != nil {
			return err
		}
		bundle, err := os.ReadFile(ca)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if img, err = image.Manager(b, bundle); err != nil {
			return err
		}
	} else {
		b, err := os.ReadFile(bin)
		if err != nil {
			return err
		}
		if img, err = image.Static(b, path, user); err != nil {
			return err
		}
	}
	if err := image.Write(out, tag, img); err != nil {
		return err
	}
	d, err := img.Digest()
	if err != nil {
		return err
	}
	fmt.Printf("%s %s %s\n", out, tag, d)
	return nil
}
