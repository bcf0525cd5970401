#!/usr/bin/env bash
# make release: reproducible, static Linux binaries of pulse-verifier,
# pulse-agent and pulsectl, their .deb packages (nfpm), a CycloneDX SBOM per
# binary and SHA256SUMS, all under dist/.
#
#   scripts/release.sh [--out DIR] [--arch "amd64 arm64"] [--no-packages] [--no-sbom]
#
# Reproducible: CGO_ENABLED=0, -trimpath, -buildvcs=false with the version,
# revision and build date passed by -ldflags from scripts/version.sh (the
# commit's time, never the clock), so the same commit builds the same bytes
# from any directory, with or without .git (set PULSE_VERSION, PULSE_REVISION
# and SOURCE_DATE_EPOCH by hand there). Packages and SBOMs use the same time
# (SOURCE_DATE_EPOCH) and no serial number. scripts/release-check.sh proves it
# (make release-check).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out=dist
arches="amd64 arm64"
packages=1
sbom=1
while [ $# -gt 0 ]; do
  case $1 in
    --out) out=$2; shift 2 ;;
    --arch) arches=$2; shift 2 ;;
    --no-packages) packages=0; shift ;;
    --no-sbom) sbom=0; shift ;;
    *) echo "release: unknown argument $1" >&2; exit 2 ;;
  esac
done
GO=${GO:-go}
gobin=$($GO env GOPATH)/bin
for tool in nfpm cyclonedx-gomod; do
  if [ ! -x "$gobin/$tool" ]; then
    echo "release: $gobin/$tool missing: run make deps (scripts/install-deps.sh)" >&2
    exit 1
  fi
done
eval "$(scripts/version.sh)"
export SOURCE_DATE_EPOCH PULSE_DEB_VERSION
mkdir -p "$out"
out=$(cd "$out" && pwd)
binaries=(pulse-verifier pulse-agent pulsectl)
vpkg=github.com/pulse-attest/pulse/internal/version
ldflags="-s -w -X $vpkg.version=$PULSE_VERSION -X $vpkg.revision=$PULSE_REVISION -X $vpkg.buildDate=$PULSE_BUILD_DATE"

echo "release: $PULSE_VERSION ($PULSE_REVISION, $PULSE_BUILD_DATE) for ${arches// /, } into $out"
for arch in $arches; do
  dir=$out/linux-$arch
  rm -rf "$dir"
  mkdir -p "$dir"
  pkgs=()
  for b in "${binaries[@]}"; do pkgs+=("./cmd/$b"); done
  # -buildvcs=false: the revision comes from -ldflags, so .git (and whether
  # the checkout has one) cannot change the bytes. No cgo: static binaries,
  # and arm64 needs no cross C toolchain.
  CGO_ENABLED=0 GOOS=linux GOARCH=$arch GOFLAGS= $GO build -trimpath -buildvcs=false \
    -ldflags="$ldflags" -o "$dir/" "${pkgs[@]}"
done

if [ "$sbom" = 1 ]; then
  mkdir -p "$out/sbom"
  for arch in $arches; do
    for b in "${binaries[@]}"; do
      "$gobin/cyclonedx-gomod" bin -json -std -noserial -notimestamp -version "$PULSE_VERSION" \
        -output "$out/sbom/$b-linux-$arch.cdx.json" "$out/linux-$arch/$b" 2>/dev/null
    done
  done
fi

if [ "$packages" = 1 ]; then
  for arch in $arches; do
    for p in "${binaries[@]}"; do
      rm -f "$out/${p}_${PULSE_DEB_VERSION}_$arch.deb"
      PULSE_ARCH=$arch PULSE_BIN_DIR=$out/linux-$arch PULSE_PACKAGING=$root/packaging \
        "$gobin/nfpm" package --packager deb --config "packaging/nfpm/$p.yaml" \
        --target "$out/${p}_${PULSE_DEB_VERSION}_$arch.deb" >/dev/null
    done
  done
fi

(cd "$out" && find . -type f ! -name SHA256SUMS | sed 's#^\./##' | LC_ALL=C sort | xargs sha256sum >SHA256SUMS)
echo "release: wrote $out/SHA256SUMS"
(cd "$out" && sed 's/^[0-9a-f]*  /  /' SHA256SUMS | while read -r f; do printf '  %-60s %10d\n' "$f" "$(stat -c %s "$f")"; done)
