# weir — progressive delivery with its own mesh.
#
#   make demo    a local cluster, a real rollout and a real rollback
#   make test    the whole suite, end-to-end tests included
#
# Everything a target needs is installed or built by the target itself.

SHELL        := /usr/bin/env bash
.SHELLFLAGS  := -eu -o pipefail -c
.DEFAULT_GOAL := help

BIN          := $(CURDIR)/bin
GO           ?= go
K8S_VERSION  := v1.36.3
ETCD_VERSION := v3.6.16
K8S_LDFLAGS  := -X k8s.io/component-base/version.gitVersion=$(K8S_VERSION) \
                -X k8s.io/component-base/version.gitMajor=1 \
                -X k8s.io/component-base/version.gitMinor=36 \
                -X k8s.io/component-base/version.gitTreeState=clean \
                -X k8s.io/component-base/version.buildDate=2026-01-01T00:00:00Z \
                -X k8s.io/client-go/pkg/version.gitVersion=$(K8S_VERSION)
TEST_TIMEOUT ?= 60m
# grpcnotrace keeps golang.org/x/net/trace, and with it text/template, out of
# weir's binaries: text/template's reflective calls stop the linker from
# dropping unused methods, which made weir-proxy 33 MB instead of 21 MB.
WEIR_TAGS    := grpcnotrace

# Tests find the pinned binaries here; envtest reads KUBEBUILDER_ASSETS.
export WEIR_BIN          := $(BIN)
export KUBEBUILDER_ASSETS := $(BIN)

K8S_TOOLS := $(BIN)/kube-apiserver $(BIN)/kube-controller-manager $(BIN)/kubectl
TOOLS     := $(BIN)/etcd $(K8S_TOOLS) $(BIN)/controller-gen
WEIR_BINS := $(BIN)/weir-controller $(BIN)/weir-proxy $(BIN)/demo-app $(BIN)/loadgen

.PHONY: help
help: ## List the targets.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-18s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

##@ Set-up

.PHONY: tools
tools: $(TOOLS) prometheus ## Build the pinned etcd, kube-apiserver, kube-controller-manager, kubectl, controller-gen into bin/; install Prometheus.

$(BIN)/etcd: test/tools/etcd/go.mod test/tools/etcd/go.sum
	cd test/tools/etcd && $(GO) build -o $@ go.etcd.io/etcd/server/v3

$(BIN)/kube-apiserver $(BIN)/kube-controller-manager $(BIN)/kubectl &: test/tools/go.mod test/tools/go.sum
	cd test/tools && $(GO) build -ldflags "$(K8S_LDFLAGS)" -o $(BIN)/ \
		k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kubectl
	touch $(K8S_TOOLS)

$(BIN)/controller-gen: test/tools/go.mod test/tools/go.sum
	cd test/tools && $(GO) build -o $@ sigs.k8s.io/controller-tools/cmd/controller-gen

.PHONY: prometheus
prometheus: ## Install Debian's prometheus package when it is missing.
	@command -v prometheus >/dev/null || { \
		echo "installing prometheus from Debian"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

.PHONY: bench-deps
bench-deps: ## Install what the benchmarks compare against (nginx, wrk).
	@command -v nginx >/dev/null && command -v wrk >/dev/null || { \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light wrk >/dev/null; }

##@ Development

.PHONY: generate
generate: $(BIN)/controller-gen ## Regenerate deepcopy, CRDs and RBAC from the API types and markers.
	$(BIN)/controller-gen object:headerFile=hack/boilerplate.go.txt paths=./canary/v1alpha1/...
	$(BIN)/controller-gen crd:allowDangerousTypes=true paths=./canary/v1alpha1/... output:crd:artifacts:config=config/crd/bases
	$(BIN)/controller-gen rbac:roleName=weir-controller paths=./... output:rbac:artifacts:config=config/rbac

.PHONY: verify-generated
verify-generated: generate ## Fail when generated files differ from what is committed.
	@if [ -n "$$(git status --porcelain -- config canary/v1alpha1)" ]; then \
		git status --porcelain -- config canary/v1alpha1; git --no-pager diff --stat -- config canary/v1alpha1; \
		echo "generated files are stale: run 'make generate' and commit the result"; exit 1; fi

.PHONY: build
build: ## Build weir-controller, weir-proxy, demo-app and loadgen into bin/.
	$(GO) build -tags $(WEIR_TAGS) -o $(BIN)/ ./cmd/weir-controller ./cmd/weir-proxy ./test/app/cmd/demo-app ./test/loadgen

.PHONY: vet
vet: ## go vet every package and fail on files gofmt would change.
	$(GO) vet -tags $(WEIR_TAGS) ./...
	@unformatted="$$(gofmt -l $$(git ls-files '*.go'))"; if [ -n "$$unformatted" ]; then \
		echo "gofmt would change:"; echo "$$unformatted"; exit 1; fi

.PHONY: test
test: tools verify-generated build vet ## Run the whole suite, end-to-end tests included.
	$(GO) test -tags $(WEIR_TAGS) -count=1 -timeout $(TEST_TIMEOUT) ./...
	@echo "weir-proxy's tests again on the goroutine-per-connection path (what the event loop hands over):"
	WEIR_PROXY_EVENT_LOOP=off $(GO) test -tags $(WEIR_TAGS) -count=1 ./mesh/proxy/

.PHONY: bench
bench: tools build bench-deps ## Run the benchmarks and print their figures.
	$(GO) test -tags $(WEIR_TAGS) -run '^$$' -bench . -benchtime 1x -timeout 30m ./mesh/xds/...
	$(GO) run -tags $(WEIR_TAGS) ./mesh/proxy/bench

.PHONY: demo
demo: tools build ## Start a local cluster, install weir and narrate a real promotion and rollback.
	$(GO) run -tags $(WEIR_TAGS) ./test/e2e/demo

.PHONY: cluster-up cluster-down
cluster-up: tools build ## Start the local cluster in the background (state in .cluster/).
	$(GO) run ./test/cluster/cmd/localcluster up
cluster-down: ## Stop the local cluster.
	$(GO) run ./test/cluster/cmd/localcluster down

.PHONY: clean
clean: ## Remove built binaries and cluster state.
	rm -rf $(BIN) .cluster
