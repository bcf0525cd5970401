#!/usr/bin/env bash
# End-to-end fleet benchmark (docs/performance.md): a verifier started in
# process by pulse-loadgen (verifier.Start, real gRPC over mTLS on
# 127.0.0.1), first on SQLite then on PostgreSQL (a throwaway cluster from
# Debian's binaries), driven by AGENTS virtual agents pulsing every INTERVAL.
# A share of them misbehave (replay, wrong-key signature, spent nonce,
# silence) and the run checks each gets its verdict while every honest agent
# stays TRUSTED. Prints the per-second report and each run's summary; JSON
# summaries go to OUT.
#
#   AGENTS=5000 INTERVAL=30s DURATION=90s scripts/fleet-bench.sh
#
# Environment (defaults in brackets):
#   AGENTS [1000]  INTERVAL [30s]  DURATION [90s]  RAMP [INTERVAL]
#   ENGINES ["sqlite postgres"]   which embedded stores to run, in order ("" for none)
#   SHARE [0.01]   share of the fleet for EACH misbehaviour (replay,
#                  bad signature, stale nonce, silent); 0 disables them
#   EXTERNAL [0]   1: also run pulse-verifier as its own process (SQLite)
#                  so the verifier's RSS and CPU are measured apart from
#                  the load generator's
#   OUT [a temp dir]  where fleet-*.json summaries are written
#   SLO_P99 [50ms] steady-state p99 that counts as "holding"
#   LOADGEN_FLAGS  extra flags for every pulse-loadgen run (e.g. --jitter 0.2)
# Every run stops by itself: DURATION, plus at most the silent agents'
# deadline (INTERVAL x 3), bounded by pulse-loadgen's --max-wait.
set -euo pipefail
cd "$(dirname "$0")/.."

AGENTS=${AGENTS:-1000}
INTERVAL=${INTERVAL:-30s}
DURATION=${DURATION:-90s}
RAMP=${RAMP:-$INTERVAL}
ENGINES=${ENGINES-sqlite postgres}
SHARE=${SHARE:-0.01}
EXTERNAL=${EXTERNAL:-0}
SLO_P99=${SLO_P99:-50ms}
OUT=${OUT:-$(mktemp -d /tmp/pulse-fleet-bench.XXXXXX)}
mkdir -p "$OUT"

bin=$(mktemp -d /tmp/pulse-fleet-bin.XXXXXX)
vpid=""
cleanup() {
  if [[ -n "$vpid" ]] && kill -0 "$vpid" 2>/dev/null; then
    kill "$vpid" 2>/dev/null || true
    wait "$vpid" 2>/dev/null || true
  fi
  rm -rf "$bin"
}
trap cleanup EXIT

go build -o "$bin/pulse-loadgen" ./cmd/pulse-loadgen
if [[ "$EXTERNAL" == 1 ]]; then
  go build -o "$bin/pulse-verifier" ./cmd/pulse-verifier
fi

# Two descriptors per agent in one process (embedded), plus slack. As root
# the hard limit can be raised; pulse-loadgen raises its own soft limit.
want=$(( AGENTS * 2 + 4096 ))
if (( $(ulimit -Hn) < want )); then ulimit -Hn "$want" 2>/dev/null || true; fi
if (( $(ulimit -Sn) < want )); then ulimit -Sn "$(ulimit -Hn)" 2>/dev/null || true; fi

common=(--agents "$AGENTS" --interval "$INTERVAL" --duration "$DURATION" --ramp "$RAMP"
  --replay-share "$SHARE" --bad-signature-share "$SHARE" --stale-nonce-share "$SHARE" --silent-share "$SHARE"
  --slo-p99 "$SLO_P99" --firmware-log testdata/eventlogs/rhel8-uefi.bin ${LOADGEN_FLAGS:-})

status=0
echo "# fleet-bench: $AGENTS agents, interval $INTERVAL, ramp $RAMP, duration $DURATION, misbehaviour share $SHARE each"
echo "# host: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg), $(uname -r)"
for engine in $ENGINES; do
  echo
  echo "## embedded verifier, store $engine"
  "$bin/pulse-loadgen" run --embedded --store "$engine" "${common[@]}" \
    --verifier-log "$OUT/verifier-$engine.log" --summary "$OUT/fleet-$engine.json" || status=1
done

if [[ "$EXTERNAL" == 1 ]]; then
  echo
  echo "## external pulse-verifier process, store sqlite"
  dir="$OUT/external"
  rm -rf "$dir"
  port=$(( 20000 + RANDOM % 20000 ))
  "$bin/pulse-loadgen" prepare --dir "$dir" --store sqlite --listen "127.0.0.1:$port" --interval "$INTERVAL" >"$dir.env"
  "$bin/pulse-verifier" run --config "$dir/verifier.hcl" >"$OUT/verifier-external.log" 2>&1 &
  vpid=$!
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
    sleep 0.1
  done
  "$bin/pulse-loadgen" run --verifier "127.0.0.1:$port" --ca "$dir/ca.pem" --ca-key "$dir/ca-key.pem" \
    --store-engine sqlite --store-dsn "$dir/state.db" --verifier-pid "$vpid" "${common[@]}" \
    --summary "$OUT/fleet-external.json" || status=1
  kill "$vpid" 2>/dev/null || true
  wait "$vpid" 2>/dev/null || true
  vpid=""
fi
echo
echo "# summaries: $OUT"
exit $status
