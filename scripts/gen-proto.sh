#!/usr/bin/env bash
# Regenerates the Go code for proto/pulse/v1/*.proto into OUT (default: in place).
# Uses Debian's protoc and the protoc-gen-go / protoc-gen-go-grpc versions pinned
# as tools in go.mod, so the output is reproducible.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root}
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
cd "$root"
go build -o "$bin/protoc-gen-go" google.golang.org/protobuf/cmd/protoc-gen-go
go build -o "$bin/protoc-gen-go-grpc" google.golang.org/grpc/cmd/protoc-gen-go-grpc
PATH="$bin:$PATH" protoc -I proto \
  --go_out="$out" --go_opt=module=github.com/pulse-attest/pulse \
  --go-grpc_out="$out" --go-grpc_opt=module=github.com/pulse-attest/pulse \
  proto/pulse/v1/*.proto
