#!/usr/bin/env bash
# Prints Pulse's benchmark figures. Each line comes from `go test -bench`;
# the TPM benchmarks run against a real swtpm (and the in-process simulator).
set -euo pipefail
cd "$(dirname "$0")/.."
BENCHTIME=${BENCHTIME:-1s}
run() {
  local pkg=$1 pattern=$2
  echo "## $pkg ($pattern)"
  go test -run '^$' -bench "$pattern" -benchmem -benchtime "$BENCHTIME" "$pkg" | grep -E '^(Benchmark|ok|FAIL|---)' || true
}
run ./tpm/ 'BenchmarkQuote'
run ./tpm/quote/ 'BenchmarkVerify'
run ./tpm/eventlog/ 'BenchmarkVerify'
run ./internal/pulsesig/ 'Benchmark'
for pkg in ./agent/ ./verifier/ ./bpf/...; do
  if go test -list 'Benchmark.*' "$pkg" 2>/dev/null | grep -q '^Benchmark'; then
    run "$pkg" 'Benchmark'
  fi
done
