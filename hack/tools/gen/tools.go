//go:build tools

// Package gen pins the code generators and chart tools the Makefile builds into bin/.
package gen

import (
	_ "helm.sh/helm/v3/cmd/helm"
	_ "sigs.k8s.io/controller-tools/cmd/controller-gen"
)
