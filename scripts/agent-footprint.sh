#!/usr/bin/env bash
# Measures a real pulse-agent on swtpm: RSS and CPU over DURATION seconds
# (default 600) at INTERVAL (default 30s), against a local verifier, after
# WARMUP seconds (default 60: enrolment, eBPF loading and the first pulses).
# Prints the steady-state window's figures (RSS at the end, and the mean and
# largest of samples taken every SAMPLE seconds, default 5, over the window:
# with release_code_pages the RSS moves within each interval), the agent's
# largest mappings at the end (/proc/PID/smaps) and, apart, the CPU the agent
# spent since it started; everything it starts is stopped at the end.
# PULSE_DEMO_BIN (default bin/) picks the binaries, as for scripts/demo.sh.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
duration=${DURATION:-600}
interval=${INTERVAL:-30s}
warmup=${WARMUP:-60}
sample=${SAMPLE:-5}
bin=${PULSE_DEMO_BIN:-$root/bin}
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
read -r f0 u0 s0 < <(awk '{print $10, $14, $15}' "/proc/$pid/stat")
t0=$(date +%s)
# VmRSS, RssAnon, RssFile and VmHWM from one read of /proc/PID/status.
st() { awk '$1 == "VmRSS:" {r=$2} $1 == "RssAnon:" {a=$2} $1 == "RssFile:" {f=$2} $1 == "VmHWM:" {h=$2} END {print r, a, f, h}' "/proc/$pid/status"; }
samples=()
while [ $(($(date +%s) - t0)) -lt "$duration" ]; do
  samples+=("$(st)")
  left=$((duration - ($(date +%s) - t0)))
  sleep "$(( left < sample ? (left > 0 ? left : 0) : sample ))"
done
read -r f1 u1 s1 < <(awk '{print $10, $14, $15}' "/proc/$pid/stat")
t1=$(date +%s)
read -r rss anon file hwm < <(st)
# The largest mappings (KiB resident), anonymous ones named by address.
maps=$(awk '/^[0-9a-f]+-[0-9a-f]+ /{name=($6 == "" ? "[anon " $1 "]" : $6) " " $2} /^Rss:/{if ($2 > 0) print $2, name}' "/proc/$pid/smaps" | sort -rn | head -8)
cpu=$((u1 + s1 - u0 - s0))
total=$((u1 + s1))
wait $runner || true
echo "agent footprint over $((t1 - t0))s at interval $interval, after a ${warmup}s warm-up:"
echo "  rss_kib=$rss peak_rss_kib=$hwm rss_anon_kib=$anon rss_file_kib=$file"
printf '%s\n' "${samples[@]}" | awk '{n++; r+=$1; a+=$2; f+=$3; if ($1 > m) m = $1} END {printf "  samples=%d rss_mean_kib=%.0f rss_max_kib=%d anon_mean_kib=%.0f file_mean_kib=%.0f\n", n, r/n, m, a/n, f/n}'
echo "  minor_faults=$((f1 - f0))"
echo "  largest mappings at the end (KiB resident):"
printf '%s\n' "$maps" | sed 's/^/    /'
awk -v c="$cpu" -v hz="$clk" -v t="$((t1 - t0))" 'BEGIN { printf "  cpu_seconds=%.2f cpu_percent_of_one_core=%.3f\n", c/hz, 100*c/hz/t }'
awk -v c="$total" -v hz="$clk" 'BEGIN { printf "  cpu_seconds_since_start=%.2f (start-up and warm-up included)\n", c/hz }'
echo "  agent_binary_bytes=$(stat -c %s "$bin/pulse-agent")"
# The demo prints each verdict change ("[  1s] id: new -> TRUSTED (OK) ...").
echo "  verdict_changes=$(grep -c -- ' -> ' "$dir/demo.out" || true)"
if grep -q -- '-> \(DEGRADED\|UNTRUSTED\|CLOCK_DESYNC\|BLINDED\) ' "$dir/demo.out"; then
  echo "footprint: the agent was not TRUSTED throughout (see $dir):"
  grep -- ' -> ' "$dir/demo.out" | cut -c1-160 | sed 's/^/  /'
  exit 1
fi
