#!/bin/sh
# pulse-verifier preinst: the "pulse" system user and group exist before the
# files owned by them are unpacked.
set -e
if ! getent group pulse >/dev/null; then
  groupadd --system pulse
fi
if ! getent passwd pulse >/dev/null; then
  useradd --system --gid pulse --home-dir /var/lib/pulse --no-create-home \
    --shell /usr/sbin/nologin --comment "Pulse attestation verifier" pulse
fi
exit 0
