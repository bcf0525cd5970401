#!/usr/bin/env bash
# Measures a real pulse-agent on swtpm: RSS and CPU over DURATION seconds
# (default 600) at INTERVAL (default 30s), against a local verifier. Prints
# the figures; everything it starts is stopped at the end.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
duration=${DURATION:-600}
interval=${INTERVAL:-30s}
dir=$(mktemp -d /tmp/pulse-footprint.XXXXXX)
export PULSE_DEMO_DIR=$dir PULSE_DEMO_SECONDS=$((duration + 5)) PULSE_DEMO_INTERVAL=$interval
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
read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$pid/stat")
t0=$(date +%s)
sleep "$duration"
read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
t1=$(date +%s)
rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
cpu=$(( (u1 + s1 - u0 - s0) ))
wait $runner || true
echo "agent footprint over $((t1 - t0))s at interval $interval:"
echo "  rss_kib=$rss peak_rss_kib=$hwm"
awk -v c="$cpu" -v hz="$clk" -v t="$((t1 - t0))" 'BEGIN { printf "  cpu_seconds=%.2f cpu_percent_of_one_core=%.3f\n", c/hz, 100*c/hz/t }'
grep -c VERDICT_TRUSTED "$dir/demo.out" | sed 's/^/  trusted_observations=/'
