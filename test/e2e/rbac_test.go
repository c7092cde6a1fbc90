package e2e

import (
	"context"
	"os"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	wasmv1 "github.com/wasm-operator/wasm-operator/api/v1alpha1"
	"github.com/wasm-operator/wasm-operator/internal/devstack"
	"github.com/wasm-operator/wasm-operator/test/chart"
)

// rbacKinds are the objects of the chart that decide what the operator may do.
var rbacKinds = map[string]bool{"ServiceAccount": true, "ClusterRole": true, "ClusterRoleBinding": true, "Role": true, "RoleBinding": true}

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
		as := func(process, account string) {
			imp := sa.Impersonate(account)
			if err := s.RunAs(process, imp.UserName, imp.Groups); err != nil {
				t.Fatal(err)
			}
		}
		as("controller", sa.Controller)
		as("host-node-a", sa.Host)
		as("host-node-b", sa.Host)
	}
}

// TestLifecycleWithChartRBAC proves the chart's RBAC sufficient: the whole lifecycle passes with the
// controller and the hosts acting as the chart's ServiceAccounts.
func TestLifecycleWithChartRBAC(t *testing.T) { lifecycle(t, chartRBAC(nil)) }

// TestMissingPermissionFails proves the RBAC proof can fail: without patch on wasmplugins/status the host
// cannot report, so the plugin never becomes Ready, and the host's log says it was forbidden.
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
			if len(res) == 1 && res[0] == "wasmplugins/status" {
				removed = true
				continue
			}
			keep = append(keep, r)
		}
		_ = unstructured.SetNestedSlice(o.Object, keep, "rules")
	})(t, s)
	if !removed {
		t.Fatal("the chart's host role has no wasmplugins/status rule to remove")
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
		return strings.Contains(string(b), "forbidden") && strings.Contains(string(b), "wasmplugins/status"),
			"the host log does not say it was forbidden to write status:\n" + string(tail(b, 2048))
	})
	got := waitPlugin(t, s, "greet", "the controller validated the module", func(p *wasmv1.WasmPlugin) bool {
		return p.Status.Artifact != nil && p.Status.TargetNodes == 1
	})
	if got.Status.ReadyNodes != 0 || isReady(got) {
		t.Fatalf("plugin Ready (%s) although the host may not report", got.Status.NodeSummary)
	}
}
