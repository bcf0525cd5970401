#!/bin/sh
# pulse-verifier prerm: stop the service before its binary goes.
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
  systemctl disable --now pulse-verifier.service >/dev/null 2>&1 || true
fi
exit 0
