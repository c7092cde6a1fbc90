package controllers

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wasmv1 "github.com/wasm-operator/wasm-operator/api/v1alpha1"
	"github.com/wasm-operator/wasm-operator/internal/testplugins"
)

var benchTimeout = 5 * time.Minute

// BenchmarkReconcile brings 500 WasmPlugins over 10 distinct modules (10 cold compiles) to a stored,
// validated artifact on the test control plane, as a GitOps sync applying them at once would, and reports
// plugins/s and the API writes per plugin. Run it with -benchtime=1x: one iteration is 500 plugins.
func BenchmarkReconcile(b *testing.B) {
	const plugins, modules = 500, 10
	greet := module(b, "greet")
	files := map[string][]byte{}
	for m := range modules {
		// The same code with a different custom section: a distinct digest, compiled on its own.
		files[fmt.Sprintf("/m%d.wasm", m)] = testplugins.WithCustomSection(greet, "v", fmt.Sprint(m))
	}
	srv := newModuleServer(b, files)
	ctx := context.Background()
	for i := range b.N {
		ns := fmt.Sprintf("bench-%d-%d", time.Now().UnixNano(), i)
		if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			b.Fatal(err)
		}
		writes := apiWrites.Load()
		start := time.Now()
		for p := range plugins {
			obj := &wasmv1.WasmPlugin{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p%d", p), Namespace: ns},
				Spec: httpSpec(fmt.Sprintf("%s/m%d.wasm", srv.URL, p%modules))}
			if err := k8s.Create(ctx, obj); err != nil {
				b.Fatal(err)
			}
		}
		deadline := time.Now().Add(benchTimeout)
		for {
			var list wasmv1.WasmPluginList
			if err := k8s.List(ctx, &list, client.InNamespace(ns)); err != nil {
				b.Fatal(err)
			}
			ready := 0
			for _, p := range list.Items {
				// Validated for its generation; with no host in this benchmark, Ready says NoHosts.
				c := meta.FindStatusCondition(p.Status.Conditions, wasmv1.ConditionReady)
				if c != nil && c.Reason == wasmv1.ReasonNoHosts && p.Status.Artifact != nil && p.Status.ObservedGeneration == p.Generation {
					ready++
				}
			}
			if ready == plugins {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("%d of %d plugins Ready after 5 minutes; first: %+v", ready, plugins, list.Items[0].Status)
			}
			time.Sleep(100 * time.Millisecond)
		}
		elapsed := time.Since(start)
		b.ReportMetric(plugins/elapsed.Seconds(), "plugins/s")
		b.ReportMetric(float64(apiWrites.Load()-writes)/plugins, "writes/plugin")
		b.StopTimer()
		if err := k8s.DeleteAllOf(ctx, &wasmv1.WasmPlugin{}, client.InNamespace(ns)); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}
