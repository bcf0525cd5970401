#!/usr/bin/env bash
# make package-check (CI runs it, as root): the .deb packages of this
# machine's architecture, built by scripts/release.sh, installed onto this
# machine and removed again:
#   - files, owners and modes are what docs/packaging.md says;
#   - the binaries tell their version;
#   - with certificates installed as an operator would, the example configs
#     validate (the verifier's as the "pulse" user), the shipped policy
#     checks, and a world-readable verifier key is refused;
#   - systemd-analyze verify passes on both units; their security exposure
#     scores are printed;
#   - the verifier starts as "pulse" from the installed files and creates its
#     store and audit log 0600;
#   - `dpkg -r` leaves only conffiles and state; `dpkg -P` only state.
# Refuses to run where a Pulse package is installed already. Leaves the
# machine as it found it (packages, state, the pulse user).
#   PULSE_PACKAGE_DIR  use the packages there instead of building them
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
fail() { echo "package-check: FAIL: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || fail "needs root (dpkg -i)"
arch=$(dpkg --print-architecture)
pkgs=(pulse-verifier pulse-agent pulsectl)
for p in "${pkgs[@]}"; do
  if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'installed\|config-files'; then
    fail "$p is installed on this machine already; package-check would remove it"
  fi
done
# /etc/pulse itself may exist: PulseAudio's client.conf lives there too.
for d in /var/lib/pulse /var/lib/pulse-agent /etc/pulse/tls /etc/pulse/verifier.hcl /etc/pulse/agent.hcl /etc/pulse/policy.hcl; do
  [ ! -e "$d" ] || fail "$d exists already; package-check would remove it"
done
had_user=0
getent passwd pulse >/dev/null && had_user=1
work=$(mktemp -d /tmp/pulse-package-check.XXXXXX)
vpid=""
cleanup() {
  [ -z "$vpid" ] || kill "$vpid" 2>/dev/null || true
  dpkg --purge "${pkgs[@]}" >/dev/null 2>&1 || true
  rm -rf /var/lib/pulse /var/lib/pulse-agent /etc/pulse/tls "$work"
  rmdir /etc/pulse 2>/dev/null || true
  if [ "$had_user" = 0 ]; then
    userdel pulse >/dev/null 2>&1 || true
    groupdel pulse >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

out=${PULSE_PACKAGE_DIR:-}
if [ -z "$out" ]; then
  scripts/release.sh --out "$work/dist" --arch "$arch" --no-sbom >/dev/null
  out=$work/dist
fi
debs=()
for p in "${pkgs[@]}"; do
  f=$(ls "$out/${p}_"*"_$arch.deb")
  debs+=("$f")
done

echo "== install"
dpkg -i "${debs[@]}" >/dev/null
for p in "${pkgs[@]}"; do dpkg-query -L "$p" | sort >"$work/$p.files"; done

mode() { stat -c '%a %U:%G' "$1"; }
expect_mode() {
  local got
  got=$(mode "$1")
  [ "$got" = "$2" ] || fail "$1 is $got, want $2"
}
expect_mode /usr/bin/pulse-verifier "755 root:root"
expect_mode /usr/bin/pulse-agent "755 root:root"
expect_mode /usr/bin/pulsectl "755 root:root"
expect_mode /etc/pulse/verifier.hcl "640 root:pulse"
expect_mode /etc/pulse/policy.hcl "640 root:pulse"
expect_mode /etc/pulse/agent.hcl "600 root:root"
expect_mode /etc/pulse/tls "750 root:pulse"
expect_mode /var/lib/pulse "700 pulse:pulse"
expect_mode /var/lib/pulse-agent "700 root:root"
expect_mode /usr/lib/systemd/system/pulse-verifier.service "644 root:root"
expect_mode /usr/lib/systemd/system/pulse-agent.service "644 root:root"
[ "$(getent passwd pulse | cut -d: -f7)" = /usr/sbin/nologin ] || fail "the pulse user has a login shell"
cmp -s /etc/pulse/verifier.hcl <(pulse-verifier config example) || fail "/etc/pulse/verifier.hcl is not pulse-verifier config example"
cmp -s /etc/pulse/agent.hcl <(pulse-agent config example) || fail "/etc/pulse/agent.hcl is not pulse-agent config example"
for b in pulse-verifier pulse-agent pulsectl; do
  v=$($b --version)
  echo "   $v"
  case $v in "$b v"*"(revision "*) ;; *) fail "$b --version: $v" ;; esac
done

echo "== example configurations"
pulsectl pki init --dir "$work/pki" >/dev/null
pulsectl pki issue --dir "$work/pki" --role verifier --id pkgcheck --out "$work/pki/verifier" >/dev/null
pulsectl pki issue --dir "$work/pki" --role agent --id pkgcheck-agent --out "$work/pki/agent" >/dev/null
install -m 0644 -o root -g pulse "$work/pki/verifier.pem" /etc/pulse/tls/verifier.pem
install -m 0600 -o pulse -g pulse "$work/pki/verifier-key.pem" /etc/pulse/tls/verifier-key.pem
install -m 0644 -o root -g pulse "$work/pki/ca.pem" /etc/pulse/tls/agent-ca.pem
install -m 0644 "$work/pki/agent.pem" /etc/pulse/tls/agent.pem
install -m 0600 "$work/pki/agent-key.pem" /etc/pulse/tls/agent-key.pem
install -m 0644 "$work/pki/ca.pem" /etc/pulse/tls/ca.pem
runuser -u pulse -- pulse-verifier validate --config /etc/pulse/verifier.hcl | sed 's/^/   /'
pulsectl policy check /etc/pulse/policy.hcl | sed 's/^/   /'
pulse-agent validate --config /etc/pulse/agent.hcl | sed 's/^/   /'
chmod 0644 /etc/pulse/tls/verifier-key.pem
if runuser -u pulse -- pulse-verifier validate --config /etc/pulse/verifier.hcl >"$work/refused" 2>&1; then
  fail "a world-readable verifier key was accepted"
fi
grep -q "private key readable by others" "$work/refused" || fail "world-readable key refused for another reason: $(cat "$work/refused")"
echo "   world-readable tls.key refused"
chmod 0600 /etc/pulse/tls/verifier-key.pem

echo "== systemd units"
systemd-analyze verify /usr/lib/systemd/system/pulse-verifier.service /usr/lib/systemd/system/pulse-agent.service
for u in pulse-verifier pulse-agent; do
  echo "   $(systemd-analyze security --offline=true "/usr/lib/systemd/system/$u.service" 2>/dev/null | grep 'Overall exposure level' | sed 's/^→ //')"
done

echo "== the verifier starts from the installed files, as pulse"
runuser -u pulse -- pulse-verifier run --config /etc/pulse/verifier.hcl >"$work/verifier.log" 2>&1 &
vpid=$!
for _ in $(seq 1 100); do
  grep -q "verifier listening" "$work/verifier.log" && break
  kill -0 "$vpid" 2>/dev/null || fail "the verifier exited: $(cat "$work/verifier.log")"
  sleep 0.1
done
grep -q "verifier listening" "$work/verifier.log" || fail "the verifier did not start: $(cat "$work/verifier.log")"
kill "$vpid"
wait "$vpid" || true
vpid=""
expect_mode /var/lib/pulse/verifier.db "600 pulse:pulse"
expect_mode /var/lib/pulse/audit.log "600 pulse:pulse"
echo "   store and audit log created 0600 pulse:pulse"

echo "== remove"
dpkg -r "${pkgs[@]}" >/dev/null
for p in "${pkgs[@]}"; do
  conffiles=$(dpkg-query -W -f='${Conffiles}\n' "$p" 2>/dev/null | awk '{print $1}' || true)
  while read -r f; do
    [ -n "$f" ] && [ ! -d "$f" ] || continue
    if [ -e "$f" ] && ! grep -qxF "$f" <<<"$conffiles"; then
      fail "dpkg -r $p left $f behind"
    fi
  done <"$work/$p.files"
done
[ -f /etc/pulse/verifier.hcl ] && [ -f /etc/pulse/agent.hcl ] || fail "dpkg -r removed a conffile"
[ -f /var/lib/pulse/verifier.db ] || fail "dpkg -r removed the verifier's state"
echo "   removed: conffiles and state kept"
dpkg -P "${pkgs[@]}" >/dev/null
for f in /etc/pulse/verifier.hcl /etc/pulse/policy.hcl /etc/pulse/agent.hcl /usr/bin/pulse-verifier /usr/bin/pulse-agent /usr/bin/pulsectl; do
  [ ! -e "$f" ] || fail "dpkg -P left $f behind"
done
[ -f /var/lib/pulse/verifier.db ] || fail "dpkg -P removed the verifier's state"
echo "   purged: state kept (docs/packaging.md)"
echo "package-check: ok"
