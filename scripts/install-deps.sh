#!/usr/bin/env bash
# Installs what Pulse's build, demo and tests need on a Debian machine:
# swtpm (the simulated TPM), protoc, clang/llvm/libbpf (eBPF generation),
# bpftool and iproute2 (eBPF tests), libssl-dev (the cgo in-process TPM
# simulator), PostgreSQL (replicated store tests), Chromium with NSS tools and
# openssl (dashboard tests with an operator certificate),
# staticcheck. Idempotent: installs only what is missing. Needs root for apt.
set -euo pipefail
pkgs=(swtpm swtpm-tools protobuf-compiler clang llvm libbpf-dev bpftool
      libssl-dev iproute2 iputils-ping postgresql chromium openssl libnss3-tools)
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
go mod download
echo "install-deps: ok"
