// Package image builds the manager's container image without Docker: one layer holding the static
// manager binary and the few files of the distroless static:nonroot base the Dockerfile ships on (the
// non-root user 65532, /tmp, the CA bundle), with the Dockerfile's entrypoint and user. hack/image writes it
// as a tarball that `ctr images import` loads into the single-node cluster; a test keeps it and the
// Dockerfile from drifting apart.
//
//	img, _ := image.Manager(binary, caBundle)
//	_ = image.Write("bin/image/manager.tar", "localhost/wasm-operator:dev", img)
package image
