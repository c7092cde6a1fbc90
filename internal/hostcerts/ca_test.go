package hostcerts

import (
	"context"
	"sync/atomic"
	"testing"

	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

// countingReader counts the reads of the API server.
type countingReader struct {
	client.Reader
	gets atomic.Int64
}

func (c *countingReader) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	c.gets.Add(1)
	return c.Reader.Get(ctx, key, obj, opts...)
}

// TestSigningReadsNothing: once the keeper has read its CA, signing with it reads nothing from the API
// server (three reads per request before: the CA Secret, the history, the ConfigMap).
func TestSigningReadsNothing(t *testing.T) {
	scheme := k8sruntime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	c := fake.NewClientBuilder().WithScheme(scheme).Build()
	r := &countingReader{Reader: c}
	k := &CAKeeper{Reader: r, Writer: c, Namespace: "ns", SecretName: "ca", HistorySecretName: "history", ConfigMapName: "bundle", Generate: true}
	ctx := context.Background()
	first, err := k.Signing(ctx) // nothing read yet: reads and makes the CA
	if err != nil {
		t.Fatal(err)
	}
	before := r.gets.Load()
	for range 100 {
		ca, err := k.Signing(ctx)
		if err != nil || ca != first {
			t.Fatalf("Signing: %v, %v; want the CA read first", ca, err)
		}
	}
	if n := r.gets.Load() - before; n != 0 {
		t.Fatalf("100 signings read the API server %d times, want 0", n)
	}
}
