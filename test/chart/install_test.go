package chart

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/wasm-operator/wasm-operator/internal/testenv"
)

// TestInstall installs the chart with the helm binary into the test control plane (no CRD preinstalled),
// as a user would: every object is created, the CRD becomes Established and serves WasmPlugins, an upgrade
// applies a changed value, and an uninstall keeps the CRD and the plugins (crds.keep).
func TestInstall(t *testing.T) {
	assets, err := testenv.Assets()
	if err != nil {
		t.Fatal(err)
	}
	env := &envtest.Environment{BinaryAssetsDirectory: assets}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("start the test control plane: %v", err)
	}
	t.Cleanup(func() { _ = env.Stop() })

	user, err := env.AddUser(envtest.User{Name: "chart-installer", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	helm := func(args ...string) []byte {
		t.Helper()
		out, err := Run(append(args, "--kubeconfig", kubeconfig)...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}

	scheme := k8sruntime.NewScheme()
	for _, add := range []func(*k8sruntime.Scheme) error{clientgoscheme.AddToScheme, apiextensionsv1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	helm("install", release, Dir(), "--namespace", ns, "--create-namespace", "--timeout", "2m")

	// Every object of the release's manifest exists.
	objs, err := Decode(helm("get", "manifest", release, "--namespace", ns))
	if err != nil {
		t.Fatal(err)
	}
	if got := kinds(objs); got["CustomResourceDefinition"] != 2 || got["Deployment"] != 1 || got["DaemonSet"] != 1 {
		t.Fatalf("release manifest kinds %v", got)
	}
	for _, o := range objs {
		live := &unstructured.Unstructured{}
		live.SetGroupVersionKind(o.GroupVersionKind())
		if err := c.Get(ctx, client.ObjectKeyFromObject(o), live); err != nil {
			t.Errorf("%s %s/%s: %v", o.GetKind(), o.GetNamespace(), o.GetName(), err)
		}
	}

	// The CRD becomes Established, and serves the sample plugins.
	crd := &apiextensionsv1.CustomResourceDefinition{}
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		if err := c.Get(ctx, client.ObjectKey{Name: "wasmplugins.wasm-operator.dev"}, crd); err != nil {
			return false, err
		}
		for _, cond := range crd.Status.Conditions {
			if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("CRD not Established: %v; conditions %+v", err, crd.Status.Conditions)
	}
	sample, err := os.ReadFile(filepath.Join(RepoRoot(), "config", "samples", "configmap.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	plugins, err := Decode(sample)
	if err != nil || len(plugins) != 1 {
		t.Fatalf("decode the configmap sample: %v (%d objects)", err, len(plugins))
	}
	plugin := plugins[0]
	if err := c.Create(ctx, plugin); err != nil {
		t.Fatalf("create the configmap sample through the chart's CRD: %v", err)
	}

	// An upgrade applies a changed value.
	helm("upgrade", release, Dir(), "--namespace", ns, "--set", "controller.replicas=2", "--timeout", "2m")
	dep := &appsv1.Deployment{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: release + "-controller"}, dep); err != nil {
		t.Fatal(err)
	}
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 2 {
		t.Errorf("controller replicas after upgrade = %v, want 2", dep.Spec.Replicas)
	}

	// Uninstalling keeps the CRD and so the plugins; the workloads go. The test control plane runs no
	// pods, so the uninstall hook's Job could not run: test/cluster runs it in a real cluster.
	helm("uninstall", release, "--namespace", ns, "--timeout", "2m", "--no-hooks")
	if err := c.Get(ctx, client.ObjectKey{Name: crd.Name}, &apiextensionsv1.CustomResourceDefinition{}); err != nil {
		t.Errorf("CRD after uninstall: %v; crds.keep should leave it", err)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(plugin), plugin); err != nil {
		t.Errorf("WasmPlugin after uninstall: %v; it should outlive the release", err)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(dep), &appsv1.Deployment{}); !apierrors.IsNotFound(err) {
		t.Errorf("controller Deployment after uninstall: %v, want not found", err)
	}
}
