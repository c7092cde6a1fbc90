package main

import (
	"context"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	wasmv1 "github.com/wasm-operator/wasm-operator/api/v1alpha1"
)

func plugin(name string, ready metav1.ConditionStatus, reason string) *wasmv1.WasmPlugin {
	return &wasmv1.WasmPlugin{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Status: wasmv1.WasmPluginStatus{Conditions: []metav1.Condition{{Type: wasmv1.ConditionReady, Status: ready, Reason: reason,
			LastTransitionTime: metav1.Now()}}}}
}

// The uninstall hook's steps: the host DaemonSet goes (or was gone), and the wait ends when no plugin
// reads Ready, or at its deadline naming those that still do.
func TestUninstallSteps(t *testing.T) {
	ctx := context.Background()
	ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Namespace: "ops", Name: "wasm-operator-host"}}
	c := fake.NewClientBuilder().WithScheme(newScheme()).WithObjects(ds).
		WithStatusSubresource(&wasmv1.WasmPlugin{}).WithObjects(plugin("up", metav1.ConditionTrue, wasmv1.ReasonSucceeded),
		plugin("down", metav1.ConditionFalse, wasmv1.ReasonNoHosts), plugin("stalled", metav1.ConditionFalse, wasmv1.ReasonInvalidModule)).Build()
	if err := stopHosts(ctx, c, "ops", "wasm-operator-host", time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(ds), &appsv1.DaemonSet{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the host DaemonSet after stopHosts: %v", err)
	}
	if err := stopHosts(ctx, c, "ops", "wasm-operator-host", time.Millisecond); err != nil {
		t.Fatalf("stopHosts with the DaemonSet gone already: %v", err)
	}

	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	ready, err := waitNoneReady(short, c, time.Millisecond)
	if err == nil || strings.Join(ready, ",") != "default/up" {
		t.Fatalf("waitNoneReady with a Ready plugin = %v, %v; want its name at the deadline", ready, err)
	}
	// Not Ready, but a host has only cleared its report (its Lease is still there): not done yet.
	setStatus := func(p *wasmv1.WasmPlugin) {
		t.Helper()
		var cur wasmv1.WasmPlugin
		if err := c.Get(ctx, client.ObjectKeyFromObject(p), &cur); err != nil {
			t.Fatal(err)
		}
		cur.Status = p.Status
		if err := c.Status().Update(ctx, &cur); err != nil {
			t.Fatal(err)
		}
	}
	setStatus(plugin("up", metav1.ConditionFalse, wasmv1.ReasonWaitingForNodes))
	short2, cancel2 := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel2()
	if ready, err := waitNoneReady(short2, c, time.Millisecond); err == nil || strings.Join(ready, ",") != "default/up" {
		t.Fatalf("waitNoneReady with a plugin WaitingForNodes = %v, %v; want its name at the deadline", ready, err)
	}
	setStatus(plugin("up", metav1.ConditionFalse, wasmv1.ReasonNoHosts))
	if ready, err := waitNoneReady(ctx, c, time.Millisecond); err != nil || len(ready) != 0 {
		t.Fatalf("waitNoneReady with none Ready = %v, %v", ready, err)
	}
}
