#!/usr/bin/env bash
# Measures a real pulse-agent on swtpm: RSS and CPU over DURATION seconds
# (default 600) at INTERVAL (default 30s), against a local verifier, after
# WARMUP seconds (default 60: enrolment, eBPF loading and the first pulses).
# Prints the steady-state window's figures and, apart, the CPU the agent
# spent since it started; everything it starts is stopped at the end.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
duration=${DURATION:-600}
interval=${INTERVAL:-30s}
warmup=${WARMUP:-60}
dir=$(mktemp -d /tmp/pulse-footprint.XXXXXX)
export PULSE_DEMO_DIR=$dir PULSE_DEMO_SECONDS=$((warmup + duration + 5)) PULSE_DEMO_INTERVAL=$interval
# The demo's set-up (swtpm, verifier, agent through the launcher).
"$root/scripts/demo.sh" > "$dir/demo.out" 2>&1 &
runner=$!
pid=""
for _ in $(seq 1 60); do
  pid=$(pgrep -f "pulse-agent run --config $dir/agent.hcl" | head -1 || true)
  [ -n "$pid" ] && break
  sleep 1
done
[ -n "$pid" ] || { echo "footprint: agent did not start"; cat "$dir/demo.out"; exit 1; }
clk=$(getconf CLK_TCK)
sleep "$warmup"
read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$pid/stat")
t0=$(date +%s)
sleep "$duration"
read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
t1=$(date +%s)
st() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$pid/status"; }
rss=$(st VmRSS) hwm=$(st VmHWM) anon=$(st RssAnon) file=$(st RssFile)
cpu=$((u1 + s1 - u0 - s0))
total=$((u1 + s1))
wait $runner || true
echo "agent footprint over $((t1 - t0))s at interval $interval, after a ${warmup}s warm-up:"
echo "  rss_kib=$rss peak_rss_kib=$hwm rss_anon_kib=$anon rss_file_kib=$file"
awk -v c="$cpu" -v hz="$clk" -v t="$((t1 - t0))" 'BEGIN { printf "  cpu_seconds=%.2f cpu_percent_of_one_core=%.3f\n", c/hz, 100*c/hz/t }'
awk -v c="$total" -v hz="$clk" 'BEGIN { printf "  cpu_seconds_since_start=%.2f (start-up and warm-up included)\n", c/hz }'
echo "  agent_binary_bytes=$(stat -c %s "$root/bin/pulse-agent")"
# The demo prints the verifier's table every 2 s: this counts its rows, not pulses.
echo "  trusted_rows_seen=$(grep -c VERDICT_TRUSTED "$dir/demo.out" || true)"
if grep -q 'VERDICT_\(DEGRADED\|UNTRUSTED\|CLOCK_DESYNC\|BLINDED\)' "$dir/demo.out"; then
  echo "footprint: the agent was not TRUSTED throughout (see $dir)"
  exit 1
fi
