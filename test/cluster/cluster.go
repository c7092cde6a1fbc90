//go:build cluster

// Package cluster installs the chart with Helm into a real single-node Kubernetes cluster (hack/cluster.sh:
// kubelet, containerd, runc, a CNI bridge) and tests it as users run it: pods of the chart's Deployment and
// DaemonSet started by a kubelet from the image built without Docker, a ReadWriteMany hostPath volume,
// projected ServiceAccount tokens, the node-local call Service through kube-proxy. `make test-cluster` runs
// it (as root); the build tag keeps `go test ./...` from needing the cluster.
package cluster

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// root is the repository's folder.
func root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Cluster is a running cluster of hack/cluster.sh.
type Cluster struct {
	Dir        string // the cluster's folder
	Kubeconfig string
	Bin        string // kubectl and the components
}

// NodeIP is the node's address (hack/cluster.sh's bridge), which pods reach directly.
const NodeIP = "10.88.0.1"

// Up starts a cluster in dir with hack/cluster.sh.
func Up(dir string) (*Cluster, error) {
	cmd := exec.Command(filepath.Join(root(), "hack", "cluster.sh"), "up", dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("hack/cluster.sh up: %w", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	c := &Cluster{Dir: dir, Kubeconfig: lines[len(lines)-1]}
	v, err := os.ReadFile(filepath.Join(root(), "hack", "tools", "kube", "go.mod"))
	if err != nil {
		return nil, err
	}
	for _, l := range strings.Split(string(v), "\n") {
		if ver, ok := strings.CutPrefix(l, "require k8s.io/kubernetes v"); ok {
			c.Bin = filepath.Join(root(), "bin", "k8s", strings.TrimSpace(ver))
		}
	}
	return c, nil
}

// Down stops the cluster, keeping the components' logs in logs.
func (c *Cluster) Down(logs string) error {
	cmd := exec.Command(filepath.Join(root(), "hack", "cluster.sh"), "down", c.Dir)
	cmd.Env = append(os.Environ(), "LOGS_DIR="+logs)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	return cmd.Run()
}

// Import loads image tarballs into the node's containerd.
func (c *Cluster) Import(tarballs ...string) error {
	dir, err := os.MkdirTemp("", "images")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	for _, t := range tarballs {
		if err := os.Symlink(t, filepath.Join(dir, filepath.Base(t))); err != nil {
			return err
		}
	}
	cmd := exec.Command(filepath.Join(root(), "hack", "cluster.sh"), "import", c.Dir)
	cmd.Env = append(os.Environ(), "IMAGES="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("import images: %w\n%s", err, out)
	}
	return nil
}

// run runs a command with the cluster's kubeconfig and returns its standard output.
func (c *Cluster) run(stdin string, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+c.Kubeconfig,
		"HELM_CACHE_HOME="+filepath.Join(c.Dir, "helm", "cache"), "HELM_CONFIG_HOME="+filepath.Join(c.Dir, "helm", "config"),
		"HELM_DATA_HOME="+filepath.Join(c.Dir, "helm", "data"))
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w\n%s%s", filepath.Base(name), strings.Join(args, " "), err, stdout.Bytes(), stderr.Bytes())
	}
	return stdout.String(), nil
}

// Kubectl runs kubectl and fails t on an error.
func (c *Cluster) Kubectl(t testing.TB, args ...string) string {
	t.Helper()
	out, err := c.run("", filepath.Join(c.Bin, "kubectl"), args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Apply applies manifest.
func (c *Cluster) Apply(t testing.TB, manifest string) {
	t.Helper()
	if _, err := c.run(manifest, filepath.Join(c.Bin, "kubectl"), "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
}

// Helm runs bin/helm and fails t on an error.
func (c *Cluster) Helm(t testing.TB, args ...string) string {
	t.Helper()
	out, err := c.run("", filepath.Join(root(), "bin", "helm"), args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Eventually polls f every 250ms until it returns nil or timeout passes, then fails t with f's last error.
func Eventually(t testing.TB, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, timeout, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}
