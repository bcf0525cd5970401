#!/bin/sh
# postrm: systemd forgets the removed unit. State (/var/lib/pulse,
# /var/lib/pulse-agent: enrollments, last-known-good, the audit chain) and
# the "pulse" user are kept even on purge: an attestation history is not
# deleted by a package manager (docs/packaging.md says how to remove it).
set -e
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0
