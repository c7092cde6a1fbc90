package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wasmv1 "github.com/wasm-operator/wasm-operator/api/v1alpha1"
	"github.com/wasm-operator/wasm-operator/internal/devstack"
	"github.com/wasm-operator/wasm-operator/test/chart"
)

// rbacKinds are the objects of the chart that decide what the operator may do.
var rbacKinds = map[string]bool{"ServiceAccount": true, "ClusterRole": true, "ClusterRoleBinding": true, "Role": true, "RoleBinding": true,
	"ValidatingAdmissionPolicy": true, "ValidatingAdmissionPolicyBinding": true}

// nodeNameClaim is the user extra a pod-bound ServiceAccount token carries: the node of the pod.
const nodeNameClaim = "authentication.kubernetes.io/node-name"

// chartRBAC returns a setup that creates the chart's ServiceAccounts and RBAC, changed by edit, and runs
// the controller and the hosts as those ServiceAccounts, so only the chart's RBAC applies to them.
func chartRBAC(edit func(*unstructured.Unstructured)) func(*testing.T, *devstack.Stack) {
	return func(t *testing.T, s *devstack.Stack) {
		t.Helper()
		objs, err := chart.Render("wasm-operator", devstack.Namespace, "--set", "crds.enabled=false")
		if err != nil {
			t.Fatal(err)
		}
		sa, err := chart.ServiceAccounts(objs)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objs {
			if !rbacKinds[o.GetKind()] {
				continue
			}
			if edit != nil {
				edit(o)
			}
			// The chart's caller role replaces the stack's own of the same name.
			if err := s.Client.Delete(context.Background(), o.DeepCopy()); err != nil && !apierrors.IsNotFound(err) {
				t.Fatal(err)
			}
			if err := s.Client.Create(context.Background(), o); err != nil {
				t.Fatalf("create %s %s: %v", o.GetKind(), o.GetName(), err)
			}
		}
		as := func(process, account, node string) {
			imp := sa.Impersonate(account)
			var extra map[string][]string
			if node != "" {
				extra = map[string][]string{nodeNameClaim: {node}}
			}
			if err := s.RunAs(process, imp.UserName, imp.Groups, extra); err != nil {
				t.Fatal(err)
			}
		}
		as("controller", sa.Controller, "")
		as("host-node-a", sa.Host, "node-a")
		as("host-node-b", sa.Host, "node-b")
		// The hosts' certificates as the chart has them made: each host asks the controller for its own.
		signer := devstack.HostSigner{
			ControllerArgs: chartArgs(t, objs, "Deployment", "--host-signer-name=", "--host-service-account=", "--host-dns-names=",
				"--host-ca-secret=", "--host-ca-history-secret=", "--host-ca-generate=", "--host-ca-configmap=", "--host-server-name="),
			HostArgs: chartArgs(t, objs, "DaemonSet", "--tls-signer-name=", "--tls-dns-names=", "--tls-cert-duration="),
		}
		for _, a := range signer.ControllerArgs {
			if v, ok := strings.CutPrefix(a, "--host-server-name="); ok {
				signer.ServerName = v
			}
			if v, ok := strings.CutPrefix(a, "--host-ca-configmap="); ok {
				signer.CAConfigMap = v
			}
		}
		if len(signer.ControllerArgs) != 8 || len(signer.HostArgs) != 3 {
			t.Fatalf("the chart's signer arguments: controller %v, host %v", signer.ControllerArgs, signer.HostArgs)
		}
		s.UseHostSigner(signer)
	}
}

// chartArgs returns the arguments of the first container of the rendered kind (Deployment: the
// controller; DaemonSet: the host) that start with one of prefixes.
func chartArgs(t *testing.T, objs []*unstructured.Unstructured, kind string, prefixes ...string) []string {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() != kind {
			continue
		}
		cs, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
		if len(cs) == 0 {
			t.Fatalf("%s %s has no container", kind, o.GetName())
		}
		all, _, _ := unstructured.NestedStringSlice(cs[0].(map[string]any), "args")
		var out []string
		for _, a := range all {
			if slices.ContainsFunc(prefixes, func(p string) bool { return strings.HasPrefix(a, p) }) {
				out = append(out, a)
			}
		}
		return out
	}
	t.Fatalf("the chart renders no %s", kind)
	return nil
}

// TestLifecycleWithChartRBAC proves the chart's RBAC sufficient: the whole lifecycle passes with the
// controller and the hosts acting as the chart's ServiceAccounts.
func TestLifecycleWithChartRBAC(t *testing.T) { lifecycle(t, chartRBAC(nil)) }

// TestMissingPermissionFails proves the RBAC proof can fail: without its rule on wasmhosts the host cannot
// report, so the plugin never becomes Ready, and the host's log says it was forbidden.
func TestMissingPermissionFails(t *testing.T) {
	ctx := context.Background()
	s, err := devstack.Start(ctx, devstack.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	removed := false
	chartRBAC(func(o *unstructured.Unstructured) {
		if o.GetKind() != "ClusterRole" || !strings.HasSuffix(o.GetName(), "-host") {
			return
		}
		rules, _, _ := unstructured.NestedSlice(o.Object, "rules")
		var keep []any
		for _, r := range rules {
			res, _, _ := unstructured.NestedStringSlice(r.(map[string]any), "resources")
			if len(res) == 1 && res[0] == "wasmhosts" {
				removed = true
				continue
			}
			keep = append(keep, r)
		}
		_ = unstructured.SetNestedSlice(o.Object, keep, "rules")
	})(t, s)
	if !removed {
		t.Fatal("the chart's host role has no wasmhosts rule to remove")
	}
	if err := s.AddNode(ctx, "node-a", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.StartController(); err != nil {
		t.Fatal(err)
	}
	addr, _ := devstack.FreePort()
	if _, err := s.StartHost("node-a", addr, "--lease-duration=4s"); err != nil {
		t.Fatal(err)
	}
	p := &wasmv1.WasmPlugin{ObjectMeta: metav1.ObjectMeta{Name: "greet", Namespace: "default"},
		Spec: wasmv1.WasmPluginSpec{Source: wasmv1.Source{HTTP: &wasmv1.HTTPSource{URL: s.PluginsURL + "/greet.wasm"}}}}
	if err := s.Client.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	eventually(t, wait, func() (bool, string) {
		b, _ := os.ReadFile(s.LogPath("host-node-a"))
		return strings.Contains(string(b), "forbidden") && strings.Contains(string(b), "wasmhosts"),
			"the host log does not say it was forbidden to write its report:\n" + string(tail(b, 2048))
	})
	got := waitPlugin(t, s, "greet", "the controller validated the module", func(p *wasmv1.WasmPlugin) bool {
		return p.Status.Artifact != nil && p.Status.TargetNodes == 1
	})
	if got.Status.ReadyNodes != 0 || isReady(got) {
		t.Fatalf("plugin Ready (%s) although the host may not report", got.Status.NodeSummary)
	}
}

// TestControllerMetricsGuarded: the controller serves /metrics over HTTPS to tokens allowed to get it, and
// under the chart's RBAC it can make the reviews that takes.
func TestControllerMetricsGuarded(t *testing.T) {
	ctx := context.Background()
	addr, err := devstack.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	s, err := devstack.Start(ctx, devstack.Options{Dir: t.TempDir(), ControllerArgs: []string{"--metrics-bind-address", addr}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	chartRBAC(nil)(t, s)
	scraper := metricsToken(t, s, kubernetes.NewForConfigOrDie(s.Config))
	if _, err := s.StartController(); err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} // the controller's certificate is self-signed
	get := func(token string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, "https://"+addr+"/metrics", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	eventually(t, wait, func() (bool, string) {
		code, body := get(scraper)
		return code == http.StatusOK && strings.Contains(body, "controller_runtime_reconcile_total"),
			fmt.Sprintf("GET /metrics with the scraper's token: %d %.200s", code, body)
	})
	if code, _ := get(""); code != http.StatusUnauthorized {
		t.Fatalf("GET /metrics without a token: %d, want 401", code)
	}
	// A token the API server accepts (its own audience, as Prometheus sends) but not allowed to get /metrics.
	kube := kubernetes.NewForConfigOrDie(s.Config)
	serviceAccountToken(t, s, kube, "stranger", false)
	stranger := tokenFor(t, kube, "stranger")
	if code, _ := get(stranger); code != http.StatusForbidden {
		t.Fatalf("GET /metrics with a token not allowed to: %d, want 403", code)
	}
}

// TestHostWritesOnlyItsOwnNode: under the chart's admission policy, a host's ServiceAccount may write the
// WasmHost and the Lease of the node its token names, and no other node's; a token without the node claim
// writes none.
func TestHostWritesOnlyItsOwnNode(t *testing.T) {
	ctx := context.Background()
	s, err := devstack.Start(ctx, devstack.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	chartRBAC(nil)(t, s)
	objs, err := chart.Render("wasm-operator", devstack.Namespace, "--set", "crds.enabled=false")
	if err != nil {
		t.Fatal(err)
	}
	sa, err := chart.ServiceAccounts(objs)
	if err != nil {
		t.Fatal(err)
	}
	hostClient := func(node string) client.Client {
		cfg := rest.CopyConfig(s.Config)
		cfg.Impersonate = sa.Impersonate(sa.Host)
		if node != "" {
			cfg.Impersonate.Extra = map[string][]string{nodeNameClaim: {node}}
		}
		c, err := client.New(cfg, client.Options{Scheme: s.Client.Scheme()})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	report := func(node string) client.Object {
		return &wasmv1.WasmHost{ObjectMeta: metav1.ObjectMeta{Name: node}, Spec: wasmv1.WasmHostSpec{NodeName: node}}
	}
	lease := func(node string) client.Object {
		return &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "wasm-host-" + node, Namespace: devstack.Namespace}}
	}
	a := hostClient("node-a")
	for _, c := range []struct {
		name string
		c    client.Client
		obj  client.Object
		want string
	}{
		{"another node's report", a, report("node-b"), "the host of node node-a may write only wasmhosts node-a, not node-b"},
		{"another node's lease", a, lease("node-b"), "the host of node node-a may write only leases wasm-host-node-a, not wasm-host-node-b"},
		{"a token without the node claim", hostClient(""), report("node-a"), "only with a pod-bound ServiceAccount token that names its node"},
	} {
		// The policy takes effect once the API server has loaded it.
		eventually(t, wait, func() (bool, string) {
			err := c.c.Create(ctx, c.obj.DeepCopyObject().(client.Object))
			return apierrors.IsForbidden(err) && strings.Contains(err.Error(), c.want),
				fmt.Sprintf("%s: %v; want Forbidden: %s", c.name, err, c.want)
		})
	}
	for _, obj := range []client.Object{report("node-a"), lease("node-a")} {
		if err := a.Create(ctx, obj); err != nil {
			t.Fatalf("the host of node-a may not write its own %T: %v", obj, err)
		}
	}
}
