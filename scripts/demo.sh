#!/usr/bin/env bash
# make demo: a swtpm booted with a real firmware log, a verifier on the
# embedded SQLite store, and an agent (started through the measuring launcher)
# attesting to it over mTLS. Prints the verdicts; Ctrl-C stops everything.
#
#   PULSE_DEMO_LOG      firmware log to boot (default testdata/eventlogs/rhel8-uefi.bin)
#   PULSE_DEMO_DIR      working directory (default: a new temp dir)
#   PULSE_DEMO_SECONDS  stop after this many seconds (default: run until Ctrl-C)
#   PULSE_DEMO_INTERVAL heartbeat interval (default 5s)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/bin
log=${PULSE_DEMO_LOG:-$root/testdata/eventlogs/rhel8-uefi.bin}
dir=${PULSE_DEMO_DIR:-$(mktemp -d /tmp/pulse-demo.XXXXXX)}
seconds=${PULSE_DEMO_SECONDS:-0}
interval=${PULSE_DEMO_INTERVAL:-5s}
mkdir -p "$dir"
pids=()
pin_dir=""

cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  "$bin/pulsectl" sim stop --state "$dir/tpm" >/dev/null 2>&1 || true
  case "$pin_dir" in /sys/fs/bpf/pulse-demo-*) rm -rf "$pin_dir" ;; esac
  echo "demo: stopped; logs and state are in $dir"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

echo "== 1. a simulated TPM that booted $(basename "$log")"
"$bin/pulsectl" sim start --state "$dir/tpm" --boot-log "$log" | tee "$dir/sim.env"
tpm_spec=$(sed -n 's/^tpm_spec=//p' "$dir/sim.env")
fw_log=$(sed -n 's/^firmware_log=//p' "$dir/sim.env")
"$bin/pulsectl" eventlog replay --log "$fw_log" | sed 's/^/   /'

echo "== 2. a demo PKI (CA, verifier and agent certificates)"
"$bin/pulsectl" pki init --dir "$dir/pki" --force >/dev/null
"$bin/pulsectl" pki issue --dir "$dir/pki" --role verifier --id demo-verifier --dns localhost --ip 127.0.0.1 --out "$dir/pki/verifier" --force >/dev/null
"$bin/pulsectl" pki issue --dir "$dir/pki" --role agent --id demo-agent-1 --out "$dir/pki/agent" --force >/dev/null
ls "$dir/pki" | sed 's/^/   /'

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
cat >"$dir/verifier.hcl" <<EOF
listen       = "127.0.0.1:$port"
policy_files = ["policy.hcl"]
tls {
  cert     = "pki/verifier.pem"
  key      = "pki/verifier-key.pem"
  agent_ca = "pki/ca.pem"
}
store {
  engine = "sqlite"
  dsn    = "verifier.db"
}
enrollment {
  # swtpm's local CA signed the simulated TPM's EK certificate.
  ek_roots = ["tpm/localca/issuercert.pem", "$(sed -n 's/^localca_cert=//p' "$dir/sim.env")"]
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

echo "== 3. pulse-verifier on 127.0.0.1:$port (log: $dir/verifier.log)"
"$bin/pulse-verifier" validate --config "$dir/verifier.hcl" | sed 's/^/   /'
"$bin/pulse-verifier" run --config "$dir/verifier.hcl" >"$dir/verifier.log" 2>&1 &
pids+=($!)
sleep 1

echo "== 4. pulse-agent, measured by the launcher before it runs (log: $dir/agent.log)"
"$bin/pulse-agent" launch --config "$dir/agent.hcl" -- run --config "$dir/agent.hcl" >"$dir/agent.log" 2>&1 &
pids+=($!)

echo "== 5. verdicts (pulsectl agents list)"
start=$SECONDS
shown_trusted=0
while :; do
  sleep 2
  out=$("$bin/pulsectl" agents list --config "$dir/verifier.hcl" 2>/dev/null || true)
  printf '%s\n' "$out" | sed "s/^/   [$((SECONDS - start))s] /"
  if [ $shown_trusted -eq 0 ] && grep -q VERDICT_TRUSTED <<<"$out"; then
    shown_trusted=1
    echo "   demo-agent-1 is TRUSTED $((SECONDS - start))s after start:"
    "$bin/pulsectl" agents show --config "$dir/verifier.hcl" demo-agent-1 | sed 's/^/     /'
  fi
  for p in "${pids[@]}"; do
    if ! kill -0 "$p" 2>/dev/null; then
      echo "demo: a daemon exited; last log lines:"
      tail -n 20 "$dir/verifier.log" "$dir/agent.log"
      exit 1
    fi
  done
  if [ "$seconds" -gt 0 ] && [ $((SECONDS - start)) -ge "$seconds" ]; then
    [ $shown_trusted -eq 1 ] || { echo "demo: no TRUSTED verdict within ${seconds}s"; tail -n 30 "$dir/verifier.log" "$dir/agent.log"; exit 1; }
    exit 0
  fi
done
