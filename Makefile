# Flotilla build, test and release entry points. `make help` lists them.

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec
.DEFAULT_GOAL := help

ROOT := $(abspath .)
BIN := $(ROOT)/bin
export PATH := $(BIN):$(PATH)
# envtest starts etcd and kube-apiserver from here.
export KUBEBUILDER_ASSETS := $(BIN)

GO ?= go
# One build configuration for binaries, images and tests, so that each
# package is compiled once: images need -trimpath (reproducible digests)
# and CGO off (static binaries), and go test would otherwise compile
# everything again with cgo on wherever a C compiler is installed.
export CGO_ENABLED := 0
export GOFLAGS := -trimpath
GOTEST := $(GO) test -json
SUMMARY := $(GO) run ./hack/testsummary
CONTROLLER_GEN := $(BIN)/controller-gen
HELM := $(BIN)/helm

UNIT_PKGS := ./api/... ./internal/... ./cmd/... ./hack/images/...
INTEGRATION_PKGS := ./controllers/... ./test/integration/... ./test/hostile/... ./test/charts/...
E2E_PKGS := ./test/testbed/... ./test/e2e/...
TEST_TIMEOUT ?= 20m

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z_-]+:.*##/ { printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

.PHONY: tools
tools: ## Build the pinned tool binaries into bin/ and install a real node's Debian packages when missing.
	hack/tools/build.sh
	hack/node-deps.sh

.PHONY: images
images: ## Build the container images as tarballs under bin/images, without a container engine.
	hack/images.sh

.PHONY: generate
generate: ## Generate deepcopy code for the API types.
	@hack/tools/build.sh controller-gen
	$(CONTROLLER_GEN) object:headerFile=hack/boilerplate.go.txt paths=./api/...

.PHONY: manifests
manifests: ## Generate CRDs and the manager's RBAC from markers.
	@hack/tools/build.sh controller-gen
	$(CONTROLLER_GEN) crd:generateEmbeddedObjectMeta=true paths=./api/... output:crd:artifacts:config=config/crd/bases
	for f in config/crd/bases/*.yaml; do $(GO) run ./hack/crdpost $$f; done
	$(GO) run ./hack/crdpost config/crd/bases/flotilla.dev_workloads.yaml spec.template
	$(CONTROLLER_GEN) rbac:roleName=flotilla-manager paths=./controllers/... output:rbac:artifacts:config=config/rbac
	@hack/sync-chart.sh

.PHONY: fmt
fmt: ## Format the Go code.
	gofmt -w $$(git ls-files '*.go' | grep -v '^hack/tools/')

.PHONY: lint
lint: ## gofmt, go vet.
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^hack/tools/')); \
	  if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

.PHONY: verify
verify: lint ## Fail when generated files are stale, code is unformatted or kustomize bases do not build.
	hack/verify-generated.sh
	@hack/tools/build.sh kubectl
	@for k in config/default config/samples; do $(BIN)/kubectl kustomize $$k >/dev/null || { echo "kustomize build of $$k failed"; exit 1; }; done

##@ Build

.PHONY: build
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

build: ## Build manager, agent and flotillactl into bin/.
	$(GO) build -ldflags "-X github.com/flotilla-dev/flotilla/internal/version.Version=$(VERSION)" -o $(BIN)/ ./cmd/...

##@ Demo

.PHONY: demo
DEMO_FLAGS ?=
demo: demo-tools build images ## A hub and three providers on this machine, with failover (DEMO_FLAGS=--no-failover to skip it); stays running.
	$(BIN)/flotillactl local up $(DEMO_FLAGS)

.PHONY: demo-tools
# Every tool but controller-gen, which only generates code.
demo-tools:
	hack/tools/build.sh kube etcd kwok kwokctl helm
	hack/node-deps.sh

.PHONY: demo-down
demo-down: build ## Remove everything make demo started.
	$(BIN)/flotillactl local down

##@ Test

.PHONY: test
# Local-federation packages run one at a time: each starts up to five
# control planes, and two cores do not start ten at once reliably.
test: tools images ## Run every test: unit, envtest integration and the local federation (real nodes need root).
	{ $(GOTEST) -timeout $(TEST_TIMEOUT) $(UNIT_PKGS) $(INTEGRATION_PKGS); \
	  $(GOTEST) -p 1 -timeout $(TEST_TIMEOUT) $(E2E_PKGS); } | $(SUMMARY)

.PHONY: test-unit
test-unit: ## Pure-logic tests (no API server).
	$(GOTEST) $(UNIT_PKGS) | $(SUMMARY)

.PHONY: test-integration
test-integration: ## envtest suites against a real kube-apiserver.
	@hack/tools/build.sh etcd kube-apiserver helm
	$(GOTEST) $(INTEGRATION_PKGS) | $(SUMMARY)

.PHONY: test-e2e
test-e2e: tools images ## End-to-end tests on the local federation.
	$(GOTEST) -p 1 -timeout $(TEST_TIMEOUT) $(E2E_PKGS) | $(SUMMARY)

.PHONY: fuzz
FUZZTIME ?= 30s
fuzz: ## Run every fuzz target for FUZZTIME each (default 30s); CI runs them for a few seconds.
	FUZZTIME=$(FUZZTIME) hack/fuzz.sh

.PHONY: bench
BENCH_TIME ?= 5x
bench: ## Go benchmarks of the pure packages on one core; JSON under bench/results/.
	@mkdir -p bench/results
	GOMAXPROCS=1 $(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCH_TIME) ./internal/... \
	  | $(GO) run ./hack/benchjson -o bench/results/go-bench.json

.PHONY: chaos-soak
CHAOS_STEPS ?= 60
chaos-soak: tools ## A long seeded chaos run on the local federation (CHAOS_STEPS, FLOTILLA_CHAOS_SEED to replay one).
	FLOTILLA_CHAOS_STEPS=$(CHAOS_STEPS) $(GO) test -count=1 -run TestChaos -v -timeout 4h ./test/e2e/

.PHONY: bench-e2e
bench-e2e: tools images ## Latency against its floor on kwok and real nodes, failover, and a stable address through failovers; JSON in bench/results/e2e.json and expose.json.
	FLOTILLA_BENCH_E2E=1 $(GO) test -count=1 -run 'TestBenchE2E|TestBenchStableAddress' -v -timeout 45m ./test/e2e/

.PHONY: bench-scale
bench-scale: tools ## A real hub with hollow providers (SCALE_PROVIDERS, SCALE_WORKLOADS, SCALE_REPLICAS, SCALE_RATE Workloads a second, 0 all at once, SCALE_MINUTES for the placement, SCALE_APF=1 the hub's API server with priority and fairness); JSON in bench/results/scale.json.
	FLOTILLA_BENCH_SCALE=1 FLOTILLA_SCALE_PROVIDERS=$(SCALE_PROVIDERS) FLOTILLA_SCALE_WORKLOADS=$(SCALE_WORKLOADS) \
	  FLOTILLA_SCALE_REPLICAS=$(SCALE_REPLICAS) FLOTILLA_SCALE_RATE=$(SCALE_RATE) FLOTILLA_SCALE_MINUTES=$(SCALE_MINUTES) \
	  FLOTILLA_SCALE_APF=$(SCALE_APF) $(GO) test -count=1 -run TestBenchScale -v -timeout 180m ./test/e2e/

SCALE_PROVIDERS ?= 50
SCALE_WORKLOADS ?= 200
SCALE_REPLICAS ?= 10
SCALE_MINUTES ?= 60
SCALE_RATE ?= 0
SCALE_APF ?= 0

##@ Testbed

.PHONY: testbed-gc
testbed-gc: ## Tear down federations left behind by killed test runs.
	$(GO) run ./cmd/flotillactl local gc
