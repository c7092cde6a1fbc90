package scale

import (
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	wasmv1 "github.com/wasm-operator/wasm-operator/api/v1alpha1"
)

func newScheme() *k8sruntime.Scheme {
	s := k8sruntime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	_ = wasmv1.AddToScheme(s)
	return s
}
