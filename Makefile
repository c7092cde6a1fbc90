# wasm-operator. `make help` lists the targets.
SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

BIN            := $(CURDIR)/bin
CONTROLLER_GEN := $(BIN)/controller-gen
K8S_VERSION    := $(shell sed -n 's/^require k8s.io\/kubernetes v//p' hack/tools/kube/go.mod)
# The folder envtest reads kube-apiserver, etcd and kubectl from.
export KUBEBUILDER_ASSETS := $(BIN)/k8s/$(K8S_VERSION)
# Tests may take a while on two cores: the control plane, plugin builds and e2e processes.
GO_TEST_FLAGS ?= -race -timeout 30m

.PHONY: help
help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

.PHONY: build
build: ## Build bin/manager.
	go build -o $(BIN)/manager ./cmd/manager

$(CONTROLLER_GEN): hack/tools/gen/go.mod
	cd hack/tools/gen && go build -o $(CONTROLLER_GEN) sigs.k8s.io/controller-tools/cmd/controller-gen

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate deepcopy code from the API types.
	$(CONTROLLER_GEN) object paths=./api/...

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate the CRD and the RBAC roles from markers.
	$(CONTROLLER_GEN) crd paths=./api/... output:crd:artifacts:config=config/crd/bases
	$(CONTROLLER_GEN) rbac:roleName=wasm-operator-controller paths=./controllers output:rbac:artifacts:config=config/rbac/controller
	$(CONTROLLER_GEN) rbac:roleName=wasm-operator-host paths=./controllers/host output:rbac:artifacts:config=config/rbac/host

.PHONY: verify
verify: ## Fail when code is unformatted, vet complains, or generated files are stale.
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change: $$out"; exit 1; fi
	go vet ./...
	$(MAKE) generate manifests
	@if ! git diff --exit-code --stat -- api config; then \
		echo "generated files are stale: run 'make generate manifests' and commit the result"; exit 1; fi
	@if [ -n "$$(git status --porcelain --untracked-files=all -- api config)" ]; then \
		git status --short -- api config; echo "generated files are not committed: run 'make generate manifests' and commit the result"; exit 1; fi

.PHONY: envtest-assets
envtest-assets: ## Build the test control plane (kube-apiserver, etcd, kubectl) into bin/k8s/.
	hack/build-control-plane.sh

.PHONY: test
test: envtest-assets ## Run every test: unit, envtest, e2e. Builds the control plane first when it is missing.
	go test $(GO_TEST_FLAGS) ./...
