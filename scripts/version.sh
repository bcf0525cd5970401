#!/usr/bin/env bash
# Prints the release identity of the source tree as shell assignments, for
# scripts/release.sh and the Makefile:
#   PULSE_VERSION   v1.2.3 at a tag, else a Go pseudo-version
#                   (v0.0.0-YYYYMMDDhhmmss-<12 hex>); "+dirty" when tracked
#                   files differ from the commit
#   PULSE_REVISION  the full commit hash
#   SOURCE_DATE_EPOCH  the commit time (so builds carry no wall-clock time)
#   PULSE_BUILD_DATE   the same time, RFC 3339 UTC
#   PULSE_DEB_VERSION  the Debian version: 1.2.3, or 0.0.0~git<stamp>.<12 hex>[.dirty]
# Values already in the environment win (a build from a source tarball
# without .git sets them by hand and gets the same bytes).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PULSE_REVISION:-}" ]; then
  PULSE_REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)
fi
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || echo 0)
fi
stamp=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y%m%d%H%M%S)
PULSE_BUILD_DATE=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
dirty=""
if [ -z "${PULSE_VERSION:-}" ]; then
  if [ -d .git ] || git rev-parse --git-dir >/dev/null 2>&1; then
    [ -z "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] || dirty=1
  fi
  if tag=$(git describe --tags --exact-match --match 'v[0-9]*' 2>/dev/null); then
    PULSE_VERSION=$tag
  else
    PULSE_VERSION="v0.0.0-$stamp-${PULSE_REVISION:0:12}"
  fi
  [ -z "$dirty" ] || PULSE_VERSION+="+dirty"
fi
if [ -z "${PULSE_DEB_VERSION:-}" ]; then
  case $PULSE_VERSION in
    v0.0.0-*) PULSE_DEB_VERSION="0.0.0~git$stamp.${PULSE_REVISION:0:12}" ;;
    *) PULSE_DEB_VERSION=${PULSE_VERSION#v}; PULSE_DEB_VERSION=${PULSE_DEB_VERSION%+dirty}; PULSE_DEB_VERSION=${PULSE_DEB_VERSION//-/\~} ;;
  esac
  case $PULSE_VERSION in *+dirty) PULSE_DEB_VERSION+=".dirty" ;; esac
fi
printf 'PULSE_VERSION=%q\nPULSE_REVISION=%q\nSOURCE_DATE_EPOCH=%q\nPULSE_BUILD_DATE=%q\nPULSE_DEB_VERSION=%q\n' \
  "$PULSE_VERSION" "$PULSE_REVISION" "$SOURCE_DATE_EPOCH" "$PULSE_BUILD_DATE" "$PULSE_DEB_VERSION"
