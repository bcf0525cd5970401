#!/usr/bin/env bash
# Makes the upgrade fixture: the state a deployment of this release leaves
# behind, for e2e/upgrade_test.go to open with a newer binary. It runs the
# real binaries (bin/, built from the release's commit) against a swtpm
# booted with a real firmware log: one TPM agent (edge-old-1) and one
# mTLS-only agent (lab-old-1) enroll and are judged, an operator approves an
# update window (an audit record), then everything stops cleanly.
#
#   verifier/store/testdata/make-upgrade-fixture.sh OUTDIR
#
# OUTDIR receives: verifier.db (one file, VACUUM INTO), audit.log, pki/ca.pem
# and pki/ca-key.pem (a throwaway test CA: the test issues fresh leaf
# certificates from it, leaves expire after 90 days), tpm/ (swtpm's NV state
# with the persisted AK, and its local EK CA), agent-edge-old-1/state.json
# and agent-lab-old-1/state.json, policy.hcl, schema_version.
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
bin=$root/bin
out=${1:?usage: make-upgrade-fixture.sh OUTDIR}
work=$(mktemp -d /tmp/pulse-fixture.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  "$bin/pulsectl" sim stop --state "$work/tpm" >/dev/null 2>&1 || true
}
trap cleanup EXIT

"$bin/pulsectl" sim start --state "$work/tpm" --boot-log "$root/testdata/eventlogs/rhel8-uefi.bin" >"$work/sim.env"
tpm_spec=$(sed -n 's/^tpm_spec=//p' "$work/sim.env")
fw_log=$(sed -n 's/^firmware_log=//p' "$work/sim.env")
"$bin/pulsectl" pki init --dir "$work/pki" >/dev/null
"$bin/pulsectl" pki issue --dir "$work/pki" --role verifier --id v1 --dns localhost --ip 127.0.0.1 --out "$work/pki/verifier" >/dev/null
for a in edge-old-1 lab-old-1; do
  mkdir -p "$work/agent-$a"
  "$bin/pulsectl" pki issue --dir "$work/pki" --role agent --id "$a" --out "$work/agent-$a/agent" >/dev/null
done
head -c 32 /dev/urandom | base64 | tr -d '\n=' >"$work/admin.token"
chmod 600 "$work/admin.token"

cat >"$work/policy.hcl" <<'POL'
policy "lab" {
  match {
    partitions = ["lab"]
  }
  tpm = "optional"
  heartbeat {
    interval = "2s"
    missed   = 3
    grace    = "20s"
  }
}

policy "fleet" {
  match {
    agents = ["*"]
  }
  tpm = "required"
  heartbeat {
    interval = "2s"
    missed   = 3
    grace    = "20s"
  }
  measured_boot {
    secure_boot {}
  }
}
POL

port=$(( 20000 + RANDOM % 20000 )); aport=$((port + 1))
cat >"$work/verifier.hcl" <<CFG
listen       = "127.0.0.1:$port"
admin_listen = "127.0.0.1:$aport"
admin_token_file = "admin.token"
policy_files = ["policy.hcl"]
allow_tpmless = true
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
  ek_roots          = ["tpm/localca/issuercert.pem", "tpm/localca/swtpm-localca-rootca-cert.pem"]
  default_partition = "fleet"
  partition "lab" {
    agents = ["lab-*"]
  }
}
alerts {
  audit_log = "audit.log"
}
CFG
for a in edge-old-1 lab-old-1; do
  spec=$tpm_spec; part=fleet
  if [ "$a" = lab-old-1 ]; then spec=none; part=lab; fi
  cat >"$work/agent-$a/agent.hcl" <<CFG
verifier     = "127.0.0.1:$port"
tpm          = "$spec"
firmware_log = "$fw_log"
runtime_log  = "runtime.cel"
state_dir    = "state"
interval     = "2s"
partition    = "$part"
tls {
  cert        = "agent.pem"
  key         = "agent-key.pem"
  ca          = "../pki/ca.pem"
  server_name = "localhost"
}
bpf {
  enabled = false
}
CFG
done
"$bin/pulse-verifier" validate --config "$work/verifier.hcl" >/dev/null
"$bin/pulse-verifier" run --config "$work/verifier.hcl" >"$work/verifier.log" 2>&1 &
vpid=$!; pids+=($vpid)
sleep 1
for a in edge-old-1 lab-old-1; do
  "$bin/pulse-agent" launch --config "$work/agent-$a/agent.hcl" -- run --config "$work/agent-$a/agent.hcl" >"$work/agent-$a.log" 2>&1 &
  pids+=($!)
done
for i in $(seq 60); do
  sleep 1
  list=$("$bin/pulsectl" agents list --config "$work/verifier.hcl" 2>/dev/null || true)
  if grep -q 'edge-old-1.*VERDICT_TRUSTED' <<<"$list" && grep -q 'lab-old-1.*VERDICT_DEGRADED' <<<"$list"; then break; fi
  [ "$i" -lt 60 ] || { echo "no verdicts:"; echo "$list"; tail -n 30 "$work"/*.log; exit 1; }
done
sleep 5 # a few more pulses: sequence, runtime log and last-known-good move on
PULSE_ADMIN_TOKEN=$(cat "$work/admin.token") "$bin/pulsectl" agents approve-update --admin "https://127.0.0.1:$aport" \
  --ca "$work/pki/ca.pem" --server-name localhost --agents 'edge-*' --digest "$(printf '%064d' 0 | tr 0 a)" --for 1h >/dev/null
"$bin/pulsectl" agents list --config "$work/verifier.hcl"
for p in "${pids[@]}"; do kill -TERM "$p"; done
wait || true
pids=()
"$bin/pulsectl" sim stop --state "$work/tpm" >/dev/null

mkdir -p "$out/pki" "$out/tpm"
rm -f "$out/verifier.db"
sqlite3 "$work/verifier.db" "VACUUM INTO '$out/verifier.db'"
sqlite3 "$out/verifier.db" 'SELECT MAX(version) FROM schema_migrations' >"$out/schema_version"
cp "$work/audit.log" "$out/audit.log"
cp "$work/pki/ca.pem" "$work/pki/ca-key.pem" "$out/pki/"
cp "$work/policy.hcl" "$out/"
# The TPM's NV state (EK seeds, the persisted AK) and the EK CA's
# certificates; not the CA's private keys.
mkdir -p "$out/tpm/tpm" "$out/tpm/localca"
cp "$work/tpm/tpm/tpm2-00.permall" "$out/tpm/tpm/"
cp "$work/tpm/localca/issuercert.pem" "$work/tpm/localca/swtpm-localca-rootca-cert.pem" "$out/tpm/localca/"
for a in edge-old-1 lab-old-1; do
  mkdir -p "$out/agent-$a"
  cp "$work/agent-$a/state/state.json" "$out/agent-$a/"
done
echo "fixture written to $out (schema $(cat "$out/schema_version"))"
rm -rf "$work"
