#!/usr/bin/env bash
# Installs what Pulse's build, demo and tests need on a Debian machine:
# swtpm (the simulated TPM), tpm2-tools (an independent TPM client for cross-checks), protoc, clang/llvm/libbpf (eBPF generation),
# bpftool and iproute2 (eBPF tests), libssl-dev (the cgo in-process TPM
# simulator), PostgreSQL (replicated store tests), Chromium with NSS tools and
# openssl (dashboard tests with an operator certificate),
# staticcheck, nfpm and cyclonedx-gomod (make release), grpcurl and
# grpc-health-probe (health and reflection tests). Idempotent: installs only what is missing. Needs root for apt.
set -euo pipefail
pkgs=(swtpm swtpm-tools protobuf-compiler clang llvm libbpf-dev bpftool
      libssl-dev iproute2 iputils-ping postgresql chromium openssl libnss3-tools
      tpm2-tools libtss2-tcti-swtpm0)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
STATICCHECK_VERSION=v0.8.2
if ! command -v staticcheck >/dev/null 2>&1 && [ ! -x "$(go env GOPATH)/bin/staticcheck" ]; then
  echo "install-deps: installing staticcheck $STATICCHECK_VERSION"
  GOFLAGS= go install "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION"
fi
# Release tooling (make release): nfpm builds the .deb packages,
# cyclonedx-gomod the SBOMs. Pinned; installed from the Go module proxy.
NFPM_VERSION=v2.48.0
CYCLONEDX_GOMOD_VERSION=v1.10.0
gobin=$(go env GOPATH)/bin
if ! go version -m "$gobin/nfpm" 2>/dev/null | grep -q "mod.*github.com/goreleaser/nfpm/v2.*$NFPM_VERSION"; then
  echo "install-deps: installing nfpm $NFPM_VERSION"
  GOFLAGS= go install "github.com/goreleaser/nfpm/v2/cmd/nfpm@$NFPM_VERSION"
fi
if ! go version -m "$gobin/cyclonedx-gomod" 2>/dev/null | grep -q "mod.*github.com/CycloneDX/cyclonedx-gomod.*$CYCLONEDX_GOMOD_VERSION"; then
  echo "install-deps: installing cyclonedx-gomod $CYCLONEDX_GOMOD_VERSION"
  GOFLAGS= go install "github.com/CycloneDX/cyclonedx-gomod/cmd/cyclonedx-gomod@$CYCLONEDX_GOMOD_VERSION"
fi
# gRPC tools the verifier's health and reflection tests run (the README's
# grpcurl line).
GRPCURL_VERSION=v1.9.3
GRPC_HEALTH_PROBE_VERSION=v0.4.63
if ! go version -m "$gobin/grpcurl" 2>/dev/null | grep -q "mod.*github.com/fullstorydev/grpcurl.*$GRPCURL_VERSION"; then
  echo "install-deps: installing grpcurl $GRPCURL_VERSION"
  GOFLAGS= go install "github.com/fullstorydev/grpcurl/cmd/grpcurl@$GRPCURL_VERSION"
fi
if ! go version -m "$gobin/grpc-health-probe" 2>/dev/null | grep -q "mod.*github.com/grpc-ecosystem/grpc-health-probe.*$GRPC_HEALTH_PROBE_VERSION"; then
  echo "install-deps: installing grpc-health-probe $GRPC_HEALTH_PROBE_VERSION"
  GOFLAGS= go install "github.com/grpc-ecosystem/grpc-health-probe@$GRPC_HEALTH_PROBE_VERSION"
fi
go mod download
echo "install-deps: ok"
