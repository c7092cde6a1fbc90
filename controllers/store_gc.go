package controllers

import (
	"context"
	"fmt"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"

	wasmv1 "github.com/wasm-operator/wasm-operator/api/v1alpha1"
	"github.com/wasm-operator/wasm-operator/internal/store"
)

// StoreGC removes modules no WasmPlugin references from the shared cache, after a grace period, and keeps
// the cache under its size cap. It runs on the elected controller only.
type StoreGC struct {
	Reconciler *WasmPluginReconciler
	// Interval between collections. Default 10m.
	Interval time.Duration
	// Grace keeps an unreferenced module this long, for rollbacks. Default 24h.
	Grace time.Duration
	// MaxBytes caps the cache; 0 means no cap.
	MaxBytes int64
}

// NeedLeaderElection makes only the elected controller collect.
func (g *StoreGC) NeedLeaderElection() bool { return true }

// Start collects every Interval until ctx ends.
func (g *StoreGC) Start(ctx context.Context) error {
	interval := g.Interval
	if interval == 0 {
		interval = 10 * time.Minute
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if _, err := g.Collect(ctx); err != nil {
				ctrl.LoggerFrom(ctx).Error(err, "collect unreferenced modules")
			}
		}
	}
}

// Collect runs one collection. Referenced are the artifacts of every WasmPlugin and the digests their hosts
// still serve.
func (g *StoreGC) Collect(ctx context.Context) (store.GCResult, error) {
	r := g.Reconciler
	var list wasmv1.WasmPluginList
	if err := r.List(ctx, &list); err != nil {
		return store.GCResult{}, fmt.Errorf("list plugins: %w", err)
	}
	keep := map[string]bool{}
	for _, p := range list.Items {
		if a := p.Status.Artifact; a != nil {
			keep[a.Digest] = true
		}
	}
	var hosts wasmv1.WasmHostList
	if err := r.List(ctx, &hosts); err != nil {
		return store.GCResult{}, fmt.Errorf("list host reports: %w", err)
	}
	for _, h := range hosts.Items {
		for _, p := range h.Status.Plugins {
			if p.Digest != "" {
				keep[p.Digest] = true
			}
		}
	}
	referenced := make([]string, 0, len(keep))
	for d := range keep {
		referenced = append(referenced, d)
	}
	grace := g.Grace
	if grace == 0 {
		grace = 24 * time.Hour
	}
	res, err := r.Store.GC(store.GCPolicy{Referenced: referenced, Grace: grace, MaxBytes: g.MaxBytes})
	if err != nil {
		return res, fmt.Errorf("collect modules: %w", err)
	}
	r.modules.release(ctx, keep)
	r.fetches.prune(time.Now().Add(-grace))
	if len(res.Removed) > 0 {
		ctrl.LoggerFrom(ctx).Info("removed unreferenced modules", "count", len(res.Removed), "entries", res.Entries, "bytes", res.Bytes)
	}
	return res, nil
}
