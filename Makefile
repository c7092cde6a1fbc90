# wasm-operator. `make help` lists the targets.
SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

BIN            := $(CURDIR)/bin
CONTROLLER_GEN := $(BIN)/controller-gen
HELM           := $(BIN)/helm
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

# helm, stamped as its release build is: its version, and the Kubernetes version `helm template` and
# `helm lint` assume (that of its client-go).
$(HELM): hack/tools/gen/go.mod
	cd hack/tools/gen && v=$$(go list -m -f '{{.Version}}' helm.sh/helm/v3) && \
	kv=$$(go list -m -f '{{.Version}}' k8s.io/client-go) && minor=$$(echo $$kv | cut -d. -f2) && \
	go build -trimpath -o $(HELM) -ldflags "-X helm.sh/helm/v3/internal/version.version=$$v \
		-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$$minor \
		-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$$minor" \
		helm.sh/helm/v3/cmd/helm

.PHONY: helm
helm: $(HELM) ## Build bin/helm, the version pinned in hack/tools/gen/go.mod.

.PHONY: chart-crds
chart-crds: ## Copy the generated CRDs and RBAC rules from config/ into the chart's templates.
	go run -C hack/tools/gen ./chartsync -root $(CURDIR)

IMG ?= ghcr.io/wasm-operator/wasm-operator:dev
.PHONY: docker-build
docker-build: ## Build the manager image $(IMG) from the Dockerfile (needs a Docker engine; not run in CI).
	docker build -t $(IMG) .

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
	@# Regenerate into the tree and compare with what was there: stale files are reported (and left
	@# regenerated, ready to review and commit), whatever else the working tree holds.
	@before=$$(mktemp -d); trap 'rm -rf $$before' EXIT; \
	cp -r config $$before/config; cp api/v1alpha1/zz_generated.deepcopy.go $$before/; \
	$(MAKE) -s generate manifests; \
	if ! diff -r $$before/config config || ! diff $$before/zz_generated.deepcopy.go api/v1alpha1/zz_generated.deepcopy.go; then \
		echo "generated files were stale: 'make generate manifests' has updated them; run 'make chart-crds', review and commit"; exit 1; fi
	go run -C hack/tools/gen ./chartsync -root $(CURDIR) -check
	hack/wazero/update.sh -check

.PHONY: envtest-assets
envtest-assets: ## Build the test control plane (kube-apiserver, etcd, kubectl) into bin/k8s/.
	hack/build-control-plane.sh

.PHONY: test
test: envtest-assets test-wazero ## Run every test: unit, envtest, e2e, and wazero's of the patched packages. Builds the control plane first when it is missing.
	go test $(GO_TEST_FLAGS) ./...

# The packages hack/wazero/termination.patch changes, and wazero's close-on-context-done tests. third_party/wazero
# is a module of its own, which `go test ./...` at the root does not enter.
WAZERO_TESTS := ./internal/engine/wazevo/... ./internal/wasm/ ./experimental/ ./internal/integration_test/engine/

NODES      ?= 1000
PLUGINS    ?= 100
REAL_HOSTS ?= 5
STEADY     ?= 1m
.PHONY: bench-scale
bench-scale: envtest-assets ## Measure the status path at scale: NODES hosts (REAL_HOSTS real, the rest simulated), PLUGINS plugins; prints one "scale:" line.
	go test -run '^$$' -bench BenchmarkScale -benchtime 1x -timeout 60m ./test/scale/ \
		-args -nodes $(NODES) -plugins $(PLUGINS) -real-hosts $(REAL_HOSTS) -steady $(STEADY)

.PHONY: test-wazero
# Without -race: wazero's integration tests under the race detector run past 10 minutes on two cores and
# were killed; the patched code's own tests in runtime/ run with -race in `test`.
test-wazero: ## Run wazero's own tests of the packages our patch touches (third_party/wazero).
	cd third_party/wazero && go test -timeout 30m $(WAZERO_TESTS)

# The single-node cluster (hack/cluster.sh): a real kubelet, containerd and CNI bridge on this machine, into
# which the chart installs as into any cluster. Needs root.
IMAGES      := $(BIN)/image
CLUSTER_DIR ?= $(or $(TMPDIR),/tmp)/wasm-operator-cluster
MANAGER_IMG := localhost/wasm-operator:dev

.PHONY: node-components
node-components: ## Build the test control plane and the node components (kubelet, kube-proxy, ...) into bin/k8s/.
	hack/build-control-plane.sh node

.PHONY: images
images: ## Build the manager image (what the Dockerfile ships) and the pause image into bin/image/, without Docker.
	@mkdir -p $(IMAGES)
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build -trimpath -ldflags="-s -w" -o $(IMAGES)/manager ./cmd/manager
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build -trimpath -ldflags="-s -w" -o $(IMAGES)/pause ./hack/pause
	go run ./hack/image -manager $(IMAGES)/manager -tag $(MANAGER_IMG) -o $(IMAGES)/manager.tar
	go run ./hack/image -bin $(IMAGES)/pause -path /pause -user 65535:65535 -tag registry.k8s.io/pause:3.10 -o $(IMAGES)/pause.tar

.PHONY: cluster-up
cluster-up: node-components images helm ## Start a single-node cluster in $(CLUSTER_DIR) with the manager image imported (root).
	hack/cluster.sh up $(CLUSTER_DIR)
	@echo "export KUBECONFIG=$(CLUSTER_DIR)/kubeconfig; then install the chart: see README (Try it on a real node)"

.PHONY: cluster-down
cluster-down: ## Stop the cluster of cluster-up and undo its changes to the machine.
	hack/cluster.sh down $(CLUSTER_DIR)

.PHONY: test-cluster
test-cluster: node-components images helm ## Install the chart with Helm into a fresh single-node cluster and test it as users run it (root).
	go vet -tags cluster ./test/cluster
	go test -tags cluster -count=1 -timeout 20m -v ./test/cluster

.PHONY: dev
dev: envtest-assets ## Run the operator locally: control plane, controller, one host, sample plugins. Ctrl-C stops it.
	go run ./hack/dev
