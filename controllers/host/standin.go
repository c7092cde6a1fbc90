package host

import (
	"context"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"

	wasmv1 "github.com/wasm-operator/wasm-operator/api/v1alpha1"
)

// InstantLoader is a Loader that loads nothing and is Ready at once with the artifact it is given: it
// stands in for the plugin runtime where only the status path is under test, as kwok stands in for
// kubelets (the host status tests, `make bench-scale`'s simulated hosts).
type InstantLoader struct {
	mu     sync.Mutex
	states map[types.NamespacedName]State
}

var _ Loader = (*InstantLoader)(nil)

// Ensure implements Loader.
func (l *InstantLoader) Ensure(_ context.Context, obj *wasmv1.WasmPlugin) error {
	key := types.NamespacedName{Namespace: obj.Namespace, Name: obj.Name}
	st := State{Generation: obj.Generation, Digest: obj.Status.Artifact.Digest, Phase: wasmv1.NodePhaseReady}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.states == nil {
		l.states = map[types.NamespacedName]State{}
	}
	if old, ok := l.states[key]; ok && old.Generation == st.Generation && old.Digest == st.Digest {
		return nil
	}
	st.Since = time.Now()
	l.states[key] = st
	return nil
}

// Unload implements Loader.
func (l *InstantLoader) Unload(key types.NamespacedName) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.states[key]
	delete(l.states, key)
	return ok
}

// State implements Loader.
func (l *InstantLoader) State(key types.NamespacedName) (State, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	st, ok := l.states[key]
	return st, ok
}

// Keys implements Loader.
func (l *InstantLoader) Keys() []types.NamespacedName {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]types.NamespacedName, 0, len(l.states))
	for k := range l.states {
		out = append(out, k)
	}
	return out
}
