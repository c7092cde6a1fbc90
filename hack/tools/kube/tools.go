//go:build tools

// Package kube pins the Kubernetes commands hack/ builds: kube-apiserver and kubectl for the test control
// plane (hack/build-control-plane.sh), and the node components of the single-node cluster
// (hack/build-node.sh).
package kube

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
