//go:build tools

// Package gen pins the code generators the Makefile builds into bin/.
package gen

import (
	_ "sigs.k8s.io/controller-tools/cmd/controller-gen"
)
