#!/usr/bin/env bash
# Prints Pulse's benchmark figures. Each line comes from `go test -bench`;
# the TPM benchmarks run against a real swtpm (and the in-process simulator,
# compiled in only with -tags pulse_sim).
set -euo pipefail
cd "$(dirname "$0")/.."
BENCHTIME=${BENCHTIME:-1s}
run() {
  local pkg=$1 pattern=$2
  echo "## $pkg ($pattern)"
  go test -tags pulse_sim -run '^$' -bench "$pattern" -benchmem -benchtime "$BENCHTIME" "$pkg" | grep -E '^(Benchmark|ok|FAIL|---)' || true
}
run ./tpm/ 'BenchmarkQuote'
run ./tpm/quote/ 'BenchmarkVerify'
run ./tpm/eventlog/ 'BenchmarkVerify'
run ./internal/pulsesig/ 'Benchmark'
run ./agent/ 'BenchmarkBuildPulse'
run ./bpf/ 'BenchmarkSnapshot'
if ls verifier/*bench_test.go >/dev/null 2>&1; then
  run ./verifier/ 'Benchmark'
fi
