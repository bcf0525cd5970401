#!/usr/bin/env bash
# Fails when committed generated code (protobuf *.pb.go, bpf2go) differs from what the
# generators produce now. Generates into a temporary tree and diffs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0

"$root/scripts/gen-proto.sh" "$tmp"
for f in "$root"/proto/pulse/v1/*.pb.go; do
  rel=${f#"$root"/}
  if ! diff -u "$f" "$tmp/$rel" >"$tmp/diff" 2>&1; then
    echo "generate-check: $rel is stale (run 'make generate'):" >&2
    head -40 "$tmp/diff" >&2
    status=1
  fi
done
# Generated files that no longer have a source.
for f in "$tmp"/proto/pulse/v1/*.pb.go; do
  rel=${f#"$tmp"/}
  [ -f "$root/$rel" ] || { echo "generate-check: $rel is missing (run 'make generate')" >&2; status=1; }
done

sh "$root/bpf/gen-check.sh" || status=1

[ $status -eq 0 ] && echo "generate-check: generated code is fresh"
exit $status
