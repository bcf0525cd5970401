#!/usr/bin/env bash
# make release-check: proves that `make release` is reproducible and static.
# Two clean checkouts of HEAD at different paths each run scripts/release.sh
# (both architectures, packages, SBOMs); every output file must be
# byte-identical, no binary may carry either checkout's path or the module
# cache's, and every binary must be static (no ELF interpreter, no dynamic
# section, CGO_ENABLED=0 in its build information).
#
# The second build shares the Go build cache with the first unless
# PULSE_RELEASE_CHECK_FRESH_CACHE=1 (then it compiles everything again from
# an empty cache: about four minutes here instead of one).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
GO=${GO:-go}
work=$(mktemp -d /tmp/pulse-release-check.XXXXXX)
a=$work/a
b=$work/b/another/deeper/path
cleanup() {
  git -C "$root" worktree remove --force "$a" >/dev/null 2>&1 || true
  git -C "$root" worktree remove --force "$b" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "release-check: FAIL: $*" >&2; exit 1; }

git -C "$root" worktree add --detach -q "$a" HEAD
mkdir -p "$(dirname "$b")"
git -C "$root" worktree add --detach -q "$b" HEAD
echo "release-check: building $(git -C "$root" rev-parse --short=12 HEAD) in $a"
(cd "$a" && scripts/release.sh --out "$work/out-a" >/dev/null)
echo "release-check: building it again in $b"
if [ "${PULSE_RELEASE_CHECK_FRESH_CACHE:-0}" = 1 ]; then
  (cd "$b" && GOCACHE="$work/gocache" scripts/release.sh --out "$work/out-b" >/dev/null)
else
  (cd "$b" && scripts/release.sh --out "$work/out-b" >/dev/null)
fi

(cd "$work/out-a" && find . -type f | LC_ALL=C sort) >"$work/files-a"
(cd "$work/out-b" && find . -type f | LC_ALL=C sort) >"$work/files-b"
diff -u "$work/files-a" "$work/files-b" || fail "the two builds wrote different files"
n=0
while read -r f; do
  cmp -s "$work/out-a/$f" "$work/out-b/$f" || fail "$f differs between the two builds"
  n=$((n + 1))
done <"$work/files-a"
for want in linux-amd64/pulse-verifier linux-arm64/pulse-verifier linux-amd64/pulse-agent linux-arm64/pulse-agent \
  linux-amd64/pulsectl linux-arm64/pulsectl SHA256SUMS; do
  grep -qx "./$want" "$work/files-a" || fail "$want missing"
done
for arch in amd64 arm64; do
  for p in pulse-verifier pulse-agent pulsectl; do
    ls "$work/out-a/${p}_"*"_$arch.deb" >/dev/null 2>&1 || fail "${p} .deb for $arch missing"
    [ -s "$work/out-a/sbom/$p-linux-$arch.cdx.json" ] || fail "SBOM of $p for $arch missing"
  done
done
(cd "$work/out-a" && sha256sum --quiet -c SHA256SUMS) || fail "SHA256SUMS does not match the files"

modcache=$($GO env GOMODCACHE)
for bin in "$work"/out-a/linux-*/*; do
  name=${bin#"$work/out-a/"}
  for leak in "$a" "$b" "$root" "$modcache"; do
    if grep -qaF "$leak" "$bin"; then fail "$name contains the build path $leak"; fi
  done
  if readelf -lW "$bin" | grep -q INTERP; then fail "$name has an ELF interpreter (not static)"; fi
  if readelf -dW "$bin" 2>/dev/null | grep -q NEEDED; then fail "$name needs shared libraries"; fi
  $GO version -m "$bin" | grep -q 'CGO_ENABLED=0' || fail "$name was not built with CGO_ENABLED=0"
  if $GO version -m "$bin" | grep -q 'pulse_sim'; then fail "$name carries the test-only TPM simulator"; fi
done
echo "release-check: ok: $n files byte-identical across two checkouts; binaries static, without build paths"
