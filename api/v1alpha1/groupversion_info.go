// Package v1alpha1 holds the WasmPlugin API of wasm-operator: the types, their validation markers, the
// condition types and reasons, and getters that resolve defaults. It holds no other logic.
//
// +kubebuilder:object:generate=true
// +groupName=wasm-operator.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the API group and version of the WasmPlugin resource.
	GroupVersion = schema.GroupVersion{Group: "wasm-operator.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the types of this package with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the types of this package to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
