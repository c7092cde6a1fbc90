package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wasmv1 "github.com/wasm-operator/wasm-operator/api/v1alpha1"
)

func init() {
	commands["uninstall"] = command{summary: "stop a release's hosts and wait until no plugin reads Ready (the chart's pre-delete hook)", run: runUninstall}
}

// runUninstall is what `helm uninstall` runs before it deletes anything: it deletes the host DaemonSet
// (foreground, so it is gone once its pods are), and waits until the controller, which still runs, has
// seen the hosts release their Leases and set every plugin's Ready to False (NoHosts). Without it Helm
// deletes the controller, the hosts and their RBAC at once, and plugins keep a Ready=True that nothing
// serves, which GitOps tools and `kubectl wait` read as healthy. It never fails the uninstall: past
// --timeout it says which plugins still read Ready and exits 0.
func runUninstall(args []string) int {
	fs := flag.NewFlagSet("manager uninstall", flag.ContinueOnError)
	ns := fs.String("namespace", operatorNamespace(), "namespace of the release")
	ds := fs.String("host-daemonset", "", "name of the release's host DaemonSet (required)")
	timeout := fs.Duration("timeout", 2*time.Minute, "how long to wait for the hosts to stop and the plugins to leave Ready")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *ds == "" {
		fmt.Fprintln(os.Stderr, "manager uninstall: --host-daemonset is required")
		return 2
	}
	// Every failure from here on is reported and the uninstall goes on: a failed hook would stop it.
	cfg, err := ctrl.GetConfig()
	if err != nil {
		fmt.Printf("manager uninstall: %v; going on with the uninstall\n", err)
		return 0
	}
	c, err := client.New(cfg, client.Options{Scheme: newScheme()})
	if err != nil {
		fmt.Printf("manager uninstall: %v; going on with the uninstall\n", err)
		return 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := stopHosts(ctx, c, *ns, *ds, time.Second); err != nil {
		fmt.Printf("manager uninstall: %v; going on with the uninstall\n", err)
		return 0
	}
	fmt.Printf("hosts of daemonset %s/%s stopped\n", *ns, *ds)
	if ready, err := waitNoneReady(ctx, c, time.Second); err != nil {
		fmt.Printf("manager uninstall: %v; still Ready: %s; going on with the uninstall\n", err, strings.Join(ready, ", "))
		return 0
	}
	fmt.Println("no plugin reads Ready: nothing serves them until the operator is installed again")
	return 0
}

// stopHosts deletes the DaemonSet with foreground propagation and waits until it is gone, which is when
// its pods are: each host released its Lease and cleared its report on the way out.
func stopHosts(ctx context.Context, c client.Client, ns, name string, every time.Duration) error {
	ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	if err := c.Delete(ctx, ds, client.PropagationPolicy(metav1.DeletePropagationForeground)); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete the host daemonset %s/%s: %w", ns, name, err)
	}
	for {
		err := c.Get(ctx, client.ObjectKeyFromObject(ds), ds)
		if apierrors.IsNotFound(err) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the host daemonset %s/%s is still there (%v)", ns, name, ctx.Err())
		case <-time.After(every):
		}
	}
}

// waitNoneReady waits until no WasmPlugin in the cluster counts a host (readyPlugins), returning those
// that still do when ctx ends first.
func waitNoneReady(ctx context.Context, c client.Client, every time.Duration) ([]string, error) {
	for {
		ready, err := readyPlugins(ctx, c)
		if err == nil && len(ready) == 0 {
			return nil, nil
		}
		select {
		case <-ctx.Done():
			if err != nil {
				return ready, fmt.Errorf("list plugins: %w", err)
			}
			return ready, fmt.Errorf("plugins still Ready (%v)", ctx.Err())
		case <-time.After(every):
		}
	}
}

// readyPlugins lists the plugins whose status still counts a host: Ready, or not Ready because hosts are
// loading or failing it (WaitingForNodes, NodesFailed), a page at a time (a cluster may hold thousands),
// keeping at most 20 names. Once the hosts are gone the controller sets those to NoHosts; a status that
// went from Ready to WaitingForNodes while a host cleared its report and had not yet released its Lease
// is not yet what the plugin will read after the uninstall.
func readyPlugins(ctx context.Context, c client.Client) ([]string, error) {
	var ready []string
	opts := []client.ListOption{client.Limit(500)}
	for {
		var list wasmv1.WasmPluginList
		if err := c.List(ctx, &list, opts...); err != nil {
			return ready, err
		}
		for _, p := range list.Items {
			if countsHosts(p.Status.Conditions) && len(ready) < 20 {
				ready = append(ready, p.Namespace+"/"+p.Name)
			}
		}
		if list.Continue == "" {
			return ready, nil
		}
		opts = []client.ListOption{client.Limit(500), client.Continue(list.Continue)}
	}
}

// countsHosts reports whether a plugin's Ready condition depends on live hosts.
func countsHosts(conds []metav1.Condition) bool {
	c := meta.FindStatusCondition(conds, wasmv1.ConditionReady)
	return c != nil && (c.Status == metav1.ConditionTrue || c.Reason == wasmv1.ReasonWaitingForNodes || c.Reason == wasmv1.ReasonNodesFailed)
}
