#!/usr/bin/env bash
# make demo: a swtpm booted with a real firmware log, a verifier on the
# embedded SQLite store with its admin listener (dashboard, operator
# certificate and token, audit log), and an agent (started through the
# measuring launcher) attesting to it over mTLS. Prints the dashboard URL,
# a `source` line for pulsectl in another terminal, then each verdict
# change. Ctrl-C stops everything it started and exits 0.
#
#   PULSE_DEMO_LOG      firmware log to boot (default testdata/eventlogs/rhel8-uefi.bin)
#   PULSE_DEMO_DIR      working directory (default: a new temp dir)
#   PULSE_DEMO_SECONDS  stop after this many seconds (default: run until Ctrl-C)
#   PULSE_DEMO_INTERVAL heartbeat interval (default 5s)
#   PULSE_DEMO_BIN      directory holding the binaries (default bin/)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${PULSE_DEMO_BIN:-$root/bin}
log=${PULSE_DEMO_LOG:-$root/testdata/eventlogs/rhel8-uefi.bin}
dir=${PULSE_DEMO_DIR:-$(mktemp -d /tmp/pulse-demo.XXXXXX)}
seconds=${PULSE_DEMO_SECONDS:-0}
interval=${PULSE_DEMO_INTERVAL:-5s}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
pids=()
pin_dir=""
status=0
stopping=0

stop_all() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
  "$bin/pulsectl" sim stop --state "$dir/tpm" >/dev/null 2>&1 || true
  case "$pin_dir" in /sys/fs/bpf/pulse-demo-*) rm -rf "$pin_dir" ;; esac
}
finish() {
  [ $stopping -eq 0 ] || return 0
  stopping=1
  stop_all
  echo "demo: stopped; state in $dir"
  exit "$status"
}
trap finish EXIT
trap 'status=0; exit 0' INT TERM
step() { echo "== $*"; }
quiet() { "$@" >>"$dir/setup.log" 2>&1 || { echo "demo: $1 failed; see $dir/setup.log"; tail -n 5 "$dir/setup.log"; status=1; exit 1; }; }

step "a simulated TPM that booted $(basename "$log")"
"$bin/pulsectl" sim start --state "$dir/tpm" --boot-log "$log" >"$dir/sim.env" 2>>"$dir/setup.log" ||
  { echo "demo: pulsectl sim start failed; see $dir/setup.log"; tail -n 5 "$dir/setup.log"; status=1; exit 1; }
tpm_spec=$(sed -n 's/^tpm_spec=//p' "$dir/sim.env")
fw_log=$(sed -n 's/^firmware_log=//p' "$dir/sim.env")
localca=$(sed -n 's/^localca_cert=//p' "$dir/sim.env")

step "a demo PKI: CA, verifier, agent and operator certificates; an admin token"
quiet "$bin/pulsectl" pki init --dir "$dir/pki" --force
quiet "$bin/pulsectl" pki issue --dir "$dir/pki" --role verifier --id demo-verifier --dns localhost --ip 127.0.0.1 --out "$dir/pki/verifier" --force
quiet "$bin/pulsectl" pki issue --dir "$dir/pki" --role agent --id demo-agent-1 --out "$dir/pki/agent" --force
quiet "$bin/pulsectl" pki issue --dir "$dir/pki" --role operator --id demo-operator --out "$dir/pki/operator" --force
# The operator certificate as PKCS#12 (empty password) for a browser.
if command -v openssl >/dev/null; then
  (umask 077; openssl pkcs12 -export -in "$dir/pki/operator.pem" -inkey "$dir/pki/operator-key.pem" \
    -out "$dir/pki/operator.p12" -passout pass: 2>>"$dir/setup.log") || true
fi
(umask 077; head -c 24 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n' >"$dir/admin.token")
token=$(cat "$dir/admin.token")

cat >"$dir/policy.hcl" <<EOF
# Demo policy: a TPM quote is required and Secure Boot must be on.
policy "demo" {
  match {
    agents = ["*"]
  }
  tpm = "required"
  heartbeat {
    interval = "$interval"
    missed   = 3
    grace    = "30s"
  }
  measured_boot {
    secure_boot {}
  }
}
EOF

port=$(( 20000 + RANDOM % 20000 ))
admin_port=$(( port + 1 ))
cat >"$dir/verifier.hcl" <<EOF
listen           = "127.0.0.1:$port"
admin_listen     = "127.0.0.1:$admin_port"
admin_token_file = "admin.token"
policy_files     = ["policy.hcl"]
tls {
  cert        = "pki/verifier.pem"
  key         = "pki/verifier-key.pem"
  agent_ca    = "pki/ca.pem"
  operator_ca = "pki/ca.pem"
}
store {
  engine = "sqlite"
  dsn    = "verifier.db"
}
enrollment {
  # swtpm's local CA signed the simulated TPM's EK certificate.
  ek_roots = ["tpm/localca/issuercert.pem", "$localca"]
}
alerts {
  audit_log = "audit.log"
}
EOF

# As root the agent loads its eBPF programs (Shield, Sentinel; Fortress where
# the kernel allows BPF-LSM), measured into the runtime log before they attach.
bpf_enabled=false
pin_dir=/sys/fs/bpf/pulse-demo-$$
if [ "$(id -u)" -eq 0 ]; then bpf_enabled=true; fi
cat >"$dir/agent.hcl" <<EOF
verifier     = "127.0.0.1:$port"
tpm          = "$tpm_spec"
firmware_log = "$fw_log"
runtime_log  = "agent/runtime.cel"
state_dir    = "agent"
interval     = "$interval"
tls {
  cert        = "pki/agent.pem"
  key         = "pki/agent-key.pem"
  ca          = "pki/ca.pem"
  server_name = "localhost"
}
bpf {
  enabled = $bpf_enabled
  pin_dir = "$pin_dir"
}
EOF
mkdir -p "$dir/agent"

# What pulsectl needs in another terminal.
cat >"$dir/pulsectl.env" <<EOF
export PATH="$bin:\$PATH"
export PULSE_VERIFIER_CONFIG="$dir/verifier.hcl"
export PULSE_ADMIN_URL="https://127.0.0.1:$admin_port"
export PULSE_ADMIN_CA="$dir/pki/ca.pem"
export PULSE_ADMIN_TOKEN="$token"
EOF
chmod 600 "$dir/pulsectl.env"

step "pulse-verifier on 127.0.0.1:$port, admin listener on 127.0.0.1:$admin_port"
quiet "$bin/pulse-verifier" validate --config "$dir/verifier.hcl"
"$bin/pulse-verifier" run --config "$dir/verifier.hcl" >"$dir/verifier.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$admin_port") 2>/dev/null && break
  kill -0 "${pids[0]}" 2>/dev/null || break
  sleep 0.2
done

step "pulse-agent, measured by the launcher before it runs"
"$bin/pulse-agent" launch --config "$dir/agent.hcl" -- run --config "$dir/agent.hcl" >"$dir/agent.log" 2>&1 &
pids+=($!)

cat <<EOF

  dashboard   https://127.0.0.1:$admin_port/?token=$token
              (the demo CA signed its certificate: $dir/pki/ca.pem;
               operator certificate for a browser: $dir/pki/operator.p12, empty password)
  pulsectl    source $dir/pulsectl.env
              then: pulsectl agents list | pulsectl alerts list | pulsectl updates list
  audit log   $dir/audit.log   (pulsectl audit verify --file $dir/audit.log)
  logs        $dir/verifier.log $dir/agent.log

== verdict changes (Ctrl-C stops the demo)
EOF

start=$SECONDS
declare -A last=()
while :; do
  sleep 1
  list=$("$bin/pulsectl" agents list --config "$dir/verifier.hcl" 2>/dev/null || true)
  while read -r id _trust verdict reason _rest; do
    [ -n "$id" ] && [ "$id" != AGENT ] || continue
    now="${verdict#VERDICT_} ${reason#REASON_}"
    if [ "${last[$id]:-}" != "$now" ]; then
      msg=$("$bin/pulsectl" agents show --config "$dir/verifier.hcl" --json "$id" 2>/dev/null | sed -n 's/^ *"message": "\(.*\)",\{0,1\}$/\1/p' | head -n 1)
      prev=${last[$id]:-new}
      printf '   [%3ds] %s: %s -> %s (%s)%s\n' "$((SECONDS - start))" "$id" "${prev%% *}" "${verdict#VERDICT_}" "${reason#REASON_}" "${msg:+ $msg}"
      last[$id]=$now
    fi
  done <<<"$list"
  for p in "${pids[@]}"; do
    if ! kill -0 "$p" 2>/dev/null; then
      echo "demo: a daemon exited unexpectedly; see $dir/verifier.log and $dir/agent.log"
      status=1
      exit 1
    fi
  done
  if [ "$seconds" -gt 0 ] && [ $((SECONDS - start)) -ge "$seconds" ]; then
    if [ -z "${last[demo-agent-1]:-}" ] || [ "${last[demo-agent-1]%% *}" != TRUSTED ]; then
      echo "demo: demo-agent-1 not TRUSTED within ${seconds}s (${last[demo-agent-1]:-no verdict})"
      status=1
      exit 1
    fi
    exit 0
  fi
done
