#!/usr/bin/env bash
# The fleet past one process's descriptor limit, as replicas run it
# (docs/performance.md, "Two replicas on one PostgreSQL"): two
# pulse-verifier replicas on one PostgreSQL store, the fleet split over two
# pulse-loadgen processes, each spreading its agents over both replicas
# (as a DNS name or an address list would); summaries merged into one
# result, every verdict checked, the verifiers' cost model reported; the
# run repeated REPEAT times.
#
#   scripts/fleet-replicas.sh                       # 19,000 agents, 30 s interval, 3 runs
#   AGENTS=4000 DURATION=90s REPEAT=1 scripts/fleet-replicas.sh
#
# Environment: as scripts/fleet-bench.sh; defaults here AGENTS=19000,
# DURATION=300s, IDLE=40s, REPEAT=3, REPLICAS=2, PROCESSES=2.
set -euo pipefail
cd "$(dirname "$0")/.."
export AGENTS=${AGENTS:-19000} DURATION=${DURATION:-300s} IDLE=${IDLE:-40s} REPEAT=${REPEAT:-3}
export REPLICAS=${REPLICAS:-2} PROCESSES=${PROCESSES:-2}
export ENGINES="" EXTERNAL=1 EXT_STORE=postgres
exec scripts/fleet-bench.sh
