// Package testenv starts the test control plane (a real kube-apiserver and etcd, built by hack/ into
// bin/k8s/<version>) with the WasmPlugin CRD installed, for the tests of every package that talks to an API
// server.
package testenv

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// RepoRoot is the folder of the repository's go.mod, found from this source file.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Assets is the folder holding kube-apiserver, etcd and kubectl: $KUBEBUILDER_ASSETS when set (the
// Makefile sets it), else bin/k8s/<version> of the repository.
func Assets() (string, error) {
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		gomod, err := os.ReadFile(filepath.Join(RepoRoot(), "hack", "tools", "kube", "go.mod"))
		if err != nil {
			return "", fmt.Errorf("find the control plane version: %w", err)
		}
		m := regexp.MustCompile(`(?m)^require k8s.io/kubernetes v(\S+)`).FindSubmatch(gomod)
		if m == nil {
			return "", errors.New("find the control plane version: no k8s.io/kubernetes in hack/tools/kube/go.mod")
		}
		dir = filepath.Join(RepoRoot(), "bin", "k8s", string(m[1]))
	}
	for _, bin := range []string{"kube-apiserver", "etcd"} {
		if _, err := os.Stat(filepath.Join(dir, bin)); err != nil {
			return "", fmt.Errorf("the test control plane is not built (%s missing in %s): run 'make envtest-assets'", bin, dir)
		}
	}
	return dir, nil
}

// Start starts the control plane with the CRDs of config/crd/bases installed. The caller stops it with
// env.Stop().
func Start() (*envtest.Environment, *rest.Config, error) {
	assets, err := Assets()
	if err != nil {
		return nil, nil, err
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     []string{filepath.Join(RepoRoot(), "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := env.Start()
	if err != nil {
		return nil, nil, fmt.Errorf("start the test control plane: %w", err)
	}
	return env, cfg, nil
}
