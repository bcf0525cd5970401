# Pulse — make help lists the targets.
SHELL := /bin/bash
GO ?= go
export PATH := $(PATH):$(shell $(GO) env GOPATH)/bin
BIN := bin
PKGS := ./...
TEST_TIMEOUT ?= 30m

.PHONY: release release-check package-check help deps build test test-short lint vet fmt-check staticcheck generate generate-check bench demo clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

deps: ## install what the build, demo and tests need (apt, staticcheck)
	scripts/install-deps.sh

# --version of a build: version, revision and commit time from
# scripts/version.sh by -ldflags (this machine's Go sets -buildvcs=false, so
# the toolchain stamps no VCS information by itself).
VERSION_LDFLAGS = $(shell eval "$$(scripts/version.sh)" && v=github.com/pulse-attest/pulse/internal/version && \
	echo "-X $$v.version=$$PULSE_VERSION -X $$v.revision=$$PULSE_REVISION -X $$v.buildDate=$$PULSE_BUILD_DATE")

build: ## build the binaries into bin/ (stripped: a smaller agent binary is cheaper to re-hash every pulse; all static, without cgo)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w $(VERSION_LDFLAGS)' -o $(BIN)/ ./cmd/...

vet: ## go vet
	$(GO) vet -tags pulse_sim $(PKGS)

fmt-check: ## fail on unformatted files
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

staticcheck: ## staticcheck
	staticcheck -tags pulse_sim $(PKGS)

lint: fmt-check vet staticcheck ## gofmt, go vet, staticcheck

generate: ## regenerate protobuf and bpf2go output (needs protoc, clang)
	scripts/gen-proto.sh
	$(GO) generate ./bpf

generate-check: ## fail when committed generated code is stale
	scripts/generate-check.sh

# Packages whose tests load eBPF programs or judge what Sentinel saw load:
# Sentinel records every eBPF load on the host, so these run one package at
# a time (a concurrent package's loads would be foreign loads to them).
BPF_PKGS := ./bpf/... ./agent/ebpf/... ./cmd/pulse-agent/... ./verifier ./e2e/...

test: deps build lint generate-check ## everything CI runs: build, lint, generated-code check, all tests
	$(GO) test -tags pulse_sim -count=1 -timeout $(TEST_TIMEOUT) -p 2 $$($(GO) list $(PKGS) | grep -v -x -F "$$($(GO) list $(BPF_PKGS))")
	$(GO) test -tags pulse_sim -count=1 -timeout $(TEST_TIMEOUT) -p 1 $(BPF_PKGS)

test-short: ## pure tests only (no swtpm, root or databases)
	$(GO) test -tags pulse_sim -short $(PKGS)

bench: build ## print the benchmark figures
	scripts/bench.sh

demo: deps build ## the product on one machine: swtpm, verifier with dashboard and audit log, agent; Ctrl-C stops it
	@# On a terminal the demo runs as its own foreground job (an interactive
	@# shell's job control), so Ctrl-C reaches the demo, which stops cleanly
	@# and exits 0, and not make, which would die of it.
	@if [ -t 0 ] && [ -t 1 ]; then bash --norc --noprofile -i -c scripts/demo.sh; else scripts/demo.sh; fi

release: ## reproducible static linux/amd64+arm64 binaries, .deb packages, SBOMs and SHA256SUMS into dist/
	scripts/release.sh --out dist

release-check: ## build the release twice from two checkouts of HEAD: byte-identical, static, no build paths
	scripts/release-check.sh

package-check: ## install the amd64 .deb packages on this machine, validate, verify the units, remove (root)
	scripts/package-check.sh

clean: ## remove build output
	rm -rf $(BIN) dist
