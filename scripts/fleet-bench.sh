#!/usr/bin/env bash
# End-to-end fleet benchmark (docs/performance.md): thousands of virtual
# agents (pulse-loadgen) over real gRPC/mTLS on 127.0.0.1 against
#  - a verifier started in process (verifier.Start), first on SQLite then
#    on PostgreSQL (a throwaway cluster from Debian's binaries): ENGINES;
#  - and/or pulse-verifier as its own process(es), EXTERNAL=1: one or more
#    replicas (REPLICAS) on one store (EXT_STORE), driven by one or more
#    pulse-loadgen processes (PROCESSES) whose summaries are merged; its
#    verifier CPU and RSS give the cost model (CPU per pulse, CPU per idle
#    connection, RSS per connected agent).
# A share of the agents misbehave (replay, wrong-key signature, spent
# nonce, silence) and the run checks each gets its verdict while every
# honest agent stays TRUSTED. Each run is repeated REPEAT times; each
# result is printed, then all of them side by side. JSON summaries go to OUT.
#
#   AGENTS=5000 INTERVAL=30s DURATION=90s scripts/fleet-bench.sh
#   AGENTS=2500 ENGINES="" EXTERNAL=1 IDLE=40s REPEAT=3 scripts/fleet-bench.sh
#   scripts/fleet-replicas.sh     # two replicas on PostgreSQL, two load processes
#
# Environment (defaults in brackets):
#   AGENTS [1000]  INTERVAL [30s]  DURATION [90s]  RAMP [INTERVAL]
#   ENGINES ["sqlite postgres"]   which embedded stores to run, in order ("" for none)
#   SHARE [0.01]   share of the fleet for EACH misbehaviour (replay,
#                  bad signature, stale nonce, silent); 0 disables them
#   EXTERNAL [0]   1: also run pulse-verifier as its own process(es)
#   EXT_STORE [sqlite]  the external verifiers' store: sqlite, or postgres
#                  (a throwaway cluster, `pulse-loadgen postgres`)
#   REPLICAS [1]   external verifier replicas on that one store
#                  (postgres only for more than one)
#   PROCESSES [1]  pulse-loadgen processes splitting the fleet; each
#                  spreads its agents over every replica; their summaries
#                  are merged (`pulse-loadgen merge`)
#   IDLE [0s]      external: after the load, every agent holds its
#                  connection this long without pulsing (idle cost)
#   PPROF [0]      external: 1 = fetch heap and 30 s CPU profiles of replica
#                  0 from its admin listener during the steady state
#   REPEAT [1]     run each configuration this many times
#   MEMORY_LIMIT [unset]  external: the verifiers' soft memory limit
#                  (GOMEMLIMIT, e.g. 1GiB; the config's memory_limit does
#                  the same), the load generators run without one
#   VERIFIER_BIN, LOADGEN_BIN  binaries to use instead of building them
#                  (e.g. an older pulse-verifier, for comparisons)
#   OUT [a temp dir]  where summaries, logs and profiles are written
#   SLO_P99 [50ms] steady-state p99 that counts as "holding"
#   LOADGEN_FLAGS  extra flags for every pulse-loadgen run (e.g. --jitter 0.2)
# Every run stops by itself: DURATION, plus at most the silent agents'
# deadline (INTERVAL x 3), bounded by pulse-loadgen's --max-wait, plus IDLE.
set -euo pipefail
cd "$(dirname "$0")/.."

AGENTS=${AGENTS:-1000}
INTERVAL=${INTERVAL:-30s}
DURATION=${DURATION:-90s}
RAMP=${RAMP:-$INTERVAL}
ENGINES=${ENGINES-sqlite postgres}
SHARE=${SHARE:-0.01}
EXTERNAL=${EXTERNAL:-0}
EXT_STORE=${EXT_STORE:-sqlite}
REPLICAS=${REPLICAS:-1}
PROCESSES=${PROCESSES:-1}
IDLE=${IDLE:-0s}
PPROF=${PPROF:-0}
REPEAT=${REPEAT:-1}
SLO_P99=${SLO_P99:-50ms}
OUT=${OUT:-$(mktemp -d /tmp/pulse-fleet-bench.XXXXXX)}
mkdir -p "$OUT"

if (( REPLICAS > 1 )) && [[ "$EXT_STORE" != postgres ]]; then
  echo "fleet-bench: REPLICAS > 1 needs EXT_STORE=postgres (replicas share a PostgreSQL store)" >&2
  exit 2
fi

bin=$(mktemp -d /tmp/pulse-fleet-bin.XXXXXX)
pids=()   # verifiers, PostgreSQL helper, load generators: everything this script started
cleanup() {
  for p in "${pids[@]}"; do
    if kill -0 "$p" 2>/dev/null; then kill "$p" 2>/dev/null || true; fi
  done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$bin"
}
trap cleanup EXIT

if [[ -n "${LOADGEN_BIN:-}" ]]; then
  cp "$LOADGEN_BIN" "$bin/pulse-loadgen"
else
  go build -o "$bin/pulse-loadgen" ./cmd/pulse-loadgen
fi
if [[ "$EXTERNAL" == 1 ]]; then
  if [[ -n "${VERIFIER_BIN:-}" ]]; then
    cp "$VERIFIER_BIN" "$bin/pulse-verifier"
  else
    go build -o "$bin/pulse-verifier" ./cmd/pulse-verifier
  fi
fi

# Two descriptors per agent in one process (embedded), plus slack. As root
# the hard limit can be raised (up to the system's; 20,000 here);
# pulse-loadgen raises its own soft limit.
want=$(( AGENTS * 2 + 4096 ))
if (( $(ulimit -Hn) < want )); then ulimit -Hn "$want" 2>/dev/null || true; fi
if (( $(ulimit -Sn) < want )); then ulimit -Sn "$(ulimit -Hn)" 2>/dev/null || true; fi

common=(--interval "$INTERVAL" --duration "$DURATION" --ramp "$RAMP"
  --replay-share "$SHARE" --bad-signature-share "$SHARE" --stale-nonce-share "$SHARE" --silent-share "$SHARE"
  --slo-p99 "$SLO_P99" --firmware-log testdata/eventlogs/rhel8-uefi.bin ${LOADGEN_FLAGS:-})

status=0
results=()  # "label|run|output file"
echo "# fleet-bench: $AGENTS agents, interval $INTERVAL, ramp $RAMP, duration $DURATION, misbehaviour share $SHARE each, $REPEAT run(s) each"
echo "# host: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg), $(uname -r)"

for run in $(seq 1 "$REPEAT"); do
  for engine in $ENGINES; do
    label="embedded-$engine"
    echo
    echo "## run $run/$REPEAT: embedded verifier, store $engine (load average $(cut -d' ' -f1-3 /proc/loadavg))"
    log="$OUT/$label-$run.out"
    "$bin/pulse-loadgen" run --embedded --store "$engine" --agents "$AGENTS" "${common[@]}" \
      --verifier-log "$OUT/verifier-$label-$run.log" --summary "$OUT/fleet-$label-$run.json" | tee "$log" || status=1
    results+=("$label|$run|$log")
  done

  if [[ "$EXTERNAL" == 1 ]]; then
    label="external-$EXT_STORE-r$REPLICAS-p$PROCESSES"
    echo
    echo "## run $run/$REPEAT: $REPLICAS external pulse-verifier replica(s), store $EXT_STORE, $PROCESSES load process(es) (load average $(cut -d' ' -f1-3 /proc/loadavg))"
    dir="$OUT/$label-$run"
    rm -rf "$dir"
    mkdir -p "$dir"
    dsn=""
    if [[ "$EXT_STORE" == postgres ]]; then
      "$bin/pulse-loadgen" postgres >"$dir/pg.env" 2>"$dir/pg.err" &
      pids+=($!)
      for _ in $(seq 1 600); do
        if grep -q '^dsn=' "$dir/pg.env" 2>/dev/null; then break; fi
        sleep 0.1
      done
      dsn=$(sed -n 's/^dsn=//p' "$dir/pg.env")
      if [[ -z "$dsn" ]]; then echo "fleet-bench: PostgreSQL did not start: $(cat "$dir/pg.err")" >&2; exit 1; fi
    fi
    base=$(( 20000 + RANDOM % 20000 ))
    listens=""
    addrs=""
    for i in $(seq 0 $(( REPLICAS - 1 ))); do
      listens+="${listens:+,}127.0.0.1:$(( base + i ))"
    done
    addrs=$listens
    "$bin/pulse-loadgen" prepare --dir "$dir" --store "$EXT_STORE" ${dsn:+--store-dsn "$dsn"} --listen "$listens" \
      --admin-listen "127.0.0.1:$(( base + 100 ))" --interval "$INTERVAL" >"$dir/setup.env"
    storedsn=$(sed -n 's/^store_dsn=//p' "$dir/setup.env")
    vpids=()
    for i in $(seq 0 $(( REPLICAS - 1 ))); do
      conf=$(sed -n "s/^config_$i=//p" "$dir/setup.env")
      env ${MEMORY_LIMIT:+GOMEMLIMIT="$MEMORY_LIMIT"} "$bin/pulse-verifier" run --config "$conf" >"$dir/verifier-$i.log" 2>&1 &
      vpids+=($!)
      pids+=($!)
      port=$(( base + i ))
      for _ in $(seq 1 300); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
        if ! kill -0 "${vpids[-1]}" 2>/dev/null; then
          echo "fleet-bench: replica $i did not start:" >&2; cat "$dir/verifier-$i.log" >&2; exit 1
        fi
        sleep 0.1
      done
    done
    vpidlist=$(IFS=,; echo "${vpids[*]}")
    per=$(( AGENTS / PROCESSES ))
    lpids=()
    for p in $(seq 0 $(( PROCESSES - 1 ))); do
      n=$per
      if (( p == PROCESSES - 1 )); then n=$(( AGENTS - per * (PROCESSES - 1) )); fi
      quiet=()
      if (( p > 0 )); then quiet=(--quiet); fi
      "$bin/pulse-loadgen" run --replicas "$addrs" --ca "$dir/ca.pem" --ca-key "$dir/ca-key.pem" \
        --store-engine "$EXT_STORE" --store-dsn "$storedsn" --verifier-pid "$vpidlist" --idle "$IDLE" \
        --agents "$n" --id-prefix "lg$p" "${common[@]}" "${quiet[@]}" \
        --ready-file "$dir/ready-$p" --go-file "$dir/go" --summary "$dir/fleet-$p.json" >"$dir/loadgen-$p.out" 2>&1 &
      lpids+=($!)
      pids+=($!)
    done
    # Start every load process together once all are set up.
    for _ in $(seq 1 3000); do
      ready=0
      for p in $(seq 0 $(( PROCESSES - 1 ))); do [[ -e "$dir/ready-$p" ]] && ready=$(( ready + 1 )); done
      (( ready == PROCESSES )) && break
      for lp in "${lpids[@]}"; do kill -0 "$lp" 2>/dev/null || { echo "fleet-bench: a load process ended during setup" >&2; cat "$dir"/loadgen-*.out >&2; exit 1; }; done
      sleep 0.1
    done
    touch "$dir/go"
    tail -n +1 -f "$dir/loadgen-0.out" --pid "${lpids[0]}" &
    tailpid=$!
    if [[ "$PPROF" == 1 ]]; then
      # Replica 0's profiles: a 30 s CPU profile from the middle of the
      # steady state, and the heap with every agent connected.
      tok=$(cat "$(sed -n 's/^admin_token_0=//p' "$dir/setup.env")")
      admin=$(sed -n 's/^admin_0=//p' "$dir/setup.env")
      (
        ramp_s=${RAMP%s}; dur_s=${DURATION%s}
        sleep $(( ramp_s + (dur_s - ramp_s) / 2 - 15 ))
        curl -sfk -H "Authorization: Bearer $tok" "https://$admin/debug/pprof/profile?seconds=30" -o "$dir/cpu.pprof" || true
        curl -sfk -H "Authorization: Bearer $tok" "https://$admin/debug/pprof/heap?gc=1" -o "$dir/heap.pprof" || true
        curl -sfk -H "Authorization: Bearer $tok" "https://$admin/debug/pprof/heap?debug=1" | sed -n '/^# runtime.MemStats/,$p' >"$dir/memstats.txt" || true
        curl -sfk -H "Authorization: Bearer $tok" "https://$admin/debug/pprof/goroutine" -o "$dir/goroutine.pprof" || true
        # And a CPU profile of the idle phase (agents connected, none pulsing).
        idle_s=${IDLE%s}
        if (( idle_s >= 20 )); then
          until grep -q '^# idle phase' "$dir/loadgen-0.out" 2>/dev/null; do
            kill -0 "${lpids[0]}" 2>/dev/null || exit 0
            sleep 0.5
          done
          curl -sfk -H "Authorization: Bearer $tok" "https://$admin/debug/pprof/profile?seconds=$(( idle_s - 5 ))" -o "$dir/cpu-idle.pprof" || true
        fi
      ) &
      pids+=($!)
    fi
    for lp in "${lpids[@]}"; do wait "$lp" || status=1; done
    wait "$tailpid" 2>/dev/null || true
    log="$OUT/$label-$run.out"
    if (( PROCESSES > 1 )); then
      "$bin/pulse-loadgen" merge --summary "$dir/fleet-merged.json" "$dir"/fleet-[0-9]*.json | tee "$log" || status=1
    else
      sed -n '/^== pulse-loadgen summary/,$p' "$dir/loadgen-0.out" >"$log"
    fi
    cp "$dir"/fleet-*.json "$OUT/" 2>/dev/null || true
    results+=("$label|$run|$log")
    # Stop what this run started: verifiers first, then PostgreSQL.
    for vp in "${vpids[@]}"; do kill "$vp" 2>/dev/null || true; wait "$vp" 2>/dev/null || true; done
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    pids=()
  fi
done

echo
echo "# all runs (each figure per run; docs/performance.md quotes every run, not the best)"
for r in "${results[@]}"; do
  IFS='|' read -r label run log <<<"$r"
  echo "## $label run $run"
  grep -E '^(steady state|latency|cost|result|verifier) ' "$log" || echo "   (no summary: see $log)"
done
echo
echo "# summaries: $OUT"
exit $status
