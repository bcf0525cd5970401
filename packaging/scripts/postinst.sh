#!/bin/sh
# pulse-verifier and pulse-agent postinst: state directories and systemd's
# view of the new unit. The service is neither enabled nor started: it needs
# certificates first (docs/packaging.md).
set -e
case "$1" in
  configure|1|2)
    if getent passwd pulse >/dev/null && [ -f /usr/bin/pulse-verifier ]; then
      install -d -m 0700 -o pulse -g pulse /var/lib/pulse
    fi
    if [ -f /usr/bin/pulse-agent ]; then
      install -d -m 0700 /var/lib/pulse-agent
    fi
    if [ -d /run/systemd/system ]; then
      systemctl daemon-reload >/dev/null 2>&1 || true
    fi
    ;;
esac
exit 0
