// Package chart renders and inspects the Helm chart charts/wasm-operator with the pinned helm binary
// (bin/helm, built by `make helm` when missing). Its tests lint, render, validate and install the chart; the
// e2e tests use it to run the operator with the chart's RBAC only:
//
//	objs, _ := chart.Render("wasm-operator", "wasm-operator-system")
//	sa, _ := chart.ServiceAccounts(objs)
//	cfg.Impersonate = sa.Impersonate(sa.Controller)
package chart

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
)

// RepoRoot is the folder of the repository's go.mod, found from this source file.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Dir is the chart's folder.
func Dir() string { return filepath.Join(RepoRoot(), "charts", "wasm-operator") }

var (
	helmOnce sync.Once
	helmPath string
	helmErr  error
)

// Helm returns the path of bin/helm, running `make helm` once per process so that a fresh clone builds it
// and a changed pin rebuilds it.
func Helm() (string, error) {
	helmOnce.Do(func() {
		root := RepoRoot()
		cmd := exec.Command("make", "-s", "helm")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			helmErr = fmt.Errorf("build helm with 'make helm': %w\n%s", err, out)
			return
		}
		helmPath = filepath.Join(root, "bin", "helm")
	})
	return helmPath, helmErr
}

// Run runs helm with args and returns its standard output; a failure's error holds its standard error.
func Run(args ...string) ([]byte, error) {
	helm, err := Helm()
	if err != nil {
		return nil, err
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(helm, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// helm keeps its repositories and cache under these; point them away from the user's.
	tmp := os.TempDir()
	cmd.Env = append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(tmp, "wasm-operator-helm", "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(tmp, "wasm-operator-helm", "config"),
		"HELM_DATA_HOME="+filepath.Join(tmp, "wasm-operator-helm", "data"))
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("helm %v: %w: %s", args, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return stdout.Bytes(), nil
}

// Template renders the chart as release in namespace with extra helm flags (--set, -f) and returns the
// manifest.
func Template(release, namespace string, flags ...string) ([]byte, error) {
	return Run(append([]string{"template", release, Dir(), "--namespace", namespace}, flags...)...)
}

// Render renders the chart and decodes its objects.
func Render(release, namespace string, flags ...string) ([]*unstructured.Unstructured, error) {
	manifest, err := Template(release, namespace, flags...)
	if err != nil {
		return nil, err
	}
	return Decode(manifest)
}

// Decode splits a multi-document manifest into objects, skipping empty documents.
func Decode(manifest []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(manifest), 4096)
	var out []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, fmt.Errorf("decode manifest: %w", err)
		}
		if len(m) == 0 {
			continue
		}
		out = append(out, &unstructured.Unstructured{Object: m})
	}
}

// Accounts are the ServiceAccounts the chart runs the operator as.
type Accounts struct {
	// Namespace is the release namespace, where both ServiceAccounts live.
	Namespace string
	// Controller is the controller Deployment's ServiceAccount name.
	Controller string
	// Host is the host DaemonSet's ServiceAccount name; empty when host.enabled is false.
	Host string
}

// ServiceAccounts finds the ServiceAccounts of the controller Deployment and the host DaemonSet in the
// rendered chart: the names the pods run as, so that a test that impersonates them gets exactly the
// permissions the chart binds to them.
func ServiceAccounts(objs []*unstructured.Unstructured) (Accounts, error) {
	var a Accounts
	for _, o := range objs {
		var dst *string
		switch {
		case o.GetKind() == "Deployment" && o.GetLabels()["app.kubernetes.io/component"] == "controller":
			dst = &a.Controller
		case o.GetKind() == "DaemonSet" && o.GetLabels()["app.kubernetes.io/component"] == "host":
			dst = &a.Host
		default:
			continue
		}
		name, _, err := unstructured.NestedString(o.Object, "spec", "template", "spec", "serviceAccountName")
		if err != nil || name == "" {
			return Accounts{}, fmt.Errorf("%s %s: no spec.template.spec.serviceAccountName", o.GetKind(), o.GetName())
		}
		if a.Namespace != "" && a.Namespace != o.GetNamespace() {
			return Accounts{}, fmt.Errorf("the controller and the hosts run in different namespaces: %s and %s", a.Namespace, o.GetNamespace())
		}
		a.Namespace, *dst = o.GetNamespace(), name
	}
	if a.Controller == "" {
		return Accounts{}, errors.New("the rendered chart has no controller Deployment")
	}
	return a, nil
}

// Username is the name the API server authenticates the ServiceAccount name of a.Namespace as.
func (a Accounts) Username(name string) string {
	return fmt.Sprintf("system:serviceaccount:%s:%s", a.Namespace, name)
}

// Impersonate returns the impersonation settings under which a client acts as the ServiceAccount name of
// a.Namespace, with the groups the API server gives every ServiceAccount token: set it on an admin's
// rest.Config so that only the RBAC bound to the ServiceAccount applies.
func (a Accounts) Impersonate(name string) rest.ImpersonationConfig {
	return rest.ImpersonationConfig{
		UserName: a.Username(name),
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + a.Namespace, "system:authenticated"},
	}
}
