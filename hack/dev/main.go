// Command dev runs wasm-operator locally for real: the test control plane (kube-apiserver and etcd built
// from Go modules), the CRD, `manager controller`, one `manager host` on a node named dev-node, and the
// sample plugins of config/samples/dev. It prints how to reach it and stops everything on Ctrl-C.
//
// Run it with `make dev`, which builds the control plane first when it is missing.
package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wasmv1 "github.com/wasm-operator/wasm-operator/api/v1alpha1"
	"github.com/wasm-operator/wasm-operator/internal/devstack"
	"github.com/wasm-operator/wasm-operator/internal/testenv"
)

const listen = "127.0.0.1:8181"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "dev:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := testenv.RepoRoot()
	dir := filepath.Join(root, "tmp", "dev")
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	fmt.Println("dev: starting the control plane, building the manager and the example plugins...")
	s, err := devstack.Start(ctx, devstack.Options{Dir: dir})
	if err != nil {
		return err
	}
	defer func() {
		fmt.Println("\ndev: stopping the host, the controller and the control plane...")
		s.Stop()
		fmt.Println("dev: stopped")
	}()
	if err := s.AddNode(ctx, "dev-node", map[string]string{"kubernetes.io/hostname": "dev-node"}); err != nil {
		return err
	}
	if _, err := s.StartController(); err != nil {
		return err
	}
	if _, err := s.StartHost("dev-node", listen, "--auth=false"); err != nil {
		return err
	}

	assets, err := testenv.Assets()
	if err != nil {
		return err
	}
	kubectl := filepath.Join(assets, "kubectl")
	samples, err := os.ReadFile(filepath.Join(root, "config", "samples", "dev", "plugins.yaml"))
	if err != nil {
		return err
	}
	apply := exec.CommandContext(ctx, kubectl, "apply", "-f", "-")
	apply.Env = append(os.Environ(), "KUBECONFIG="+s.Kubeconfig)
	apply.Stdin = strings.NewReader(strings.ReplaceAll(string(samples), "PLUGINS_URL", s.PluginsURL))
	apply.Stdout, apply.Stderr = os.Stdout, os.Stderr
	if err := apply.Run(); err != nil {
		return fmt.Errorf("apply the sample plugins: %w", err)
	}
	fmt.Println("dev: waiting for the plugins to be Ready on dev-node...")
	if err := waitReady(ctx, s.Client, 3*time.Minute); err != nil {
		return fmt.Errorf("%w (logs: %s, %s)", err, s.LogPath("controller"), s.LogPath("host-dev-node"))
	}
	get := exec.CommandContext(ctx, kubectl, "get", "wasmplugins", "-o", "wide")
	get.Env = apply.Env
	get.Stdout, get.Stderr = os.Stdout, os.Stderr
	_ = get.Run()
	fmt.Printf(`
wasm-operator is running. In another terminal:

  export KUBECONFIG=%s
  export PATH=%s:$PATH
  kubectl get wasmplugins
  curl -X POST --data world http://%s/v1/namespaces/default/wasmplugins/greet/call/greet
  curl -X POST --data 'Hello, World!' http://%s/v1/namespaces/default/wasmplugins/count-vowels/call/count_vowels

Logs: %s and %s. Ctrl-C stops everything.
`, s.Kubeconfig, assets, listen, listen, s.LogPath("controller"), s.LogPath("host-dev-node"))
	<-ctx.Done()
	return nil
}

// waitReady waits until every WasmPlugin is Ready.
func waitReady(ctx context.Context, c client.Client, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var last string
	for {
		var list wasmv1.WasmPluginList
		if err := c.List(ctx, &list); err == nil && len(list.Items) > 0 {
			ready := true
			for _, p := range list.Items {
				if !meta.IsStatusConditionTrue(p.Status.Conditions, wasmv1.ConditionReady) {
					ready = false
					if c := meta.FindStatusCondition(p.Status.Conditions, wasmv1.ConditionReady); c != nil {
						last = p.Name + ": " + c.Message
					}
				}
			}
			if ready {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("plugins not Ready: %s", last)
		case <-tick.C:
		}
	}
}
