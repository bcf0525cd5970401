#!/bin/sh
# Regenerates the bpf2go output (bpf/*_bpfel.go, bpf/*_bpfel.o) into a
# temporary directory with the exact commands of the //go:generate lines in
# bpf/gen.go and fails when the committed files differ: run it in CI so the
# committed objects always match bpf/c/. Needs clang, llvm-strip and
# libbpf-dev (Debian: apt-get install clang llvm libbpf-dev); the output is
# byte-identical for the same clang version.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

grep '^//go:generate ' gen.go | sed 's|^//go:generate ||' | while IFS= read -r cmd; do
	# Insert the output directory right after the tool name (before the
	# positional ident and source arguments).
	cmd=$(printf '%s\n' "$cmd" | sed "s|bpf2go |bpf2go -output-dir $tmp |")
	GOPACKAGE=bpf GOFILE=gen.go sh -c "$cmd"
done

status=0
for f in "$tmp"/*; do
	name=$(basename "$f")
	if [ ! -f "$here/$name" ]; then
		echo "gen-check: $name is generated but not committed" >&2
		status=1
	elif ! cmp -s "$f" "$here/$name"; then
		echo "gen-check: $name is stale (run: go generate ./bpf)" >&2
		status=1
	fi
done
for f in "$here"/*_bpfel.go "$here"/*_bpfel.o; do
	name=$(basename "$f")
	if [ ! -f "$tmp/$name" ]; then
		echo "gen-check: $name is committed but no longer generated" >&2
		status=1
	fi
done
if [ "$status" -eq 0 ]; then
	echo "gen-check: generated eBPF code is up to date"
fi
exit "$status"
