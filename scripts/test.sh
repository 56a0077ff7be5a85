#!/usr/bin/env bash
# The whole test suite, on a fresh machine too: installs what it needs, checks formatting and
# lints, builds once, starts a throwaway PostgreSQL on 127.0.0.1, and runs every test against
# real processes. Usage: ./scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/common.sh
# Every build in this run stamps one commit into build_info (container-test.sh checks it there):
# one value, so cargo never rebuilds the services between steps for a changed stamp.
export MERIDIAN_GIT_COMMIT=${MERIDIAN_GIT_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}

step "Installing what the tests need"
# cargo-deny compiles for minutes: in the background, while the packages below download.
deny_log=$(mktemp)
ensure_cargo_deny >"$deny_log" 2>&1 &
deny_install=$!
ensure_base_tools
ensure_postgresql
ensure_observability_tools
ensure_rust_components

step "Formatting and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "Building (debug, shared target/)"
cargo build --workspace --bins --tests --locked

step "Starting a throwaway PostgreSQL on 127.0.0.1"
start_test_postgres
export MERIDIAN_TEST_POSTGRES_URL="$TEST_POSTGRES_URL"

step "Tests"
results=$(mktemp)
cargo test --workspace --locked 2>&1 | tee "$results"

# The release build (the images, the hostile clients, the benchmarks and the run command use
# it) compiles from here in the background at the lowest priority, while the steps below spend
# much of their time waiting on what they start (schemathesis, k6, Prometheus, Chromium, the
# validators' downloads); the CPU they want stays theirs. Not during the tests above: some of
# them time answers against real clocks.
release_log=$(mktemp)
nice -n 19 cargo build --release --locked --bins >"$release_log" 2>&1 &
release_build=$!
trap 'kill "$release_build" 2>/dev/null || true; stop_test_postgres' EXIT

step "Kubernetes and Linkerd manifests: rendered, validated, tied to the code (k8s/tests/check.sh)"
k8s/tests/check.sh

step "The local cluster (scripts/cluster.sh): shellcheck, and its plan against the pinned upstream CLIs, charts and kind API"
command -v shellcheck >/dev/null || apt_install shellcheck
shellcheck -x scripts/cluster.sh
python3 -m unittest scripts/cluster/test_cluster_contract.py 2>&1 | tail -n 3

step "Security gates, offline: cargo-deny, semgrep, actionlint, zizmor, checkov (scripts/security.sh)"
wait "$deny_install" || { cat "$deny_log" >&2; echo "installing cargo-deny failed" >&2; exit 1; }
rm -f "$deny_log"
scripts/security.sh

step "DAST: schemathesis against both services (scripts/dast.sh)"
scripts/dast.sh

step "The API contract: Spectral and generated clients against both services (scripts/openapi-contract.sh)"
scripts/openapi-contract.sh

step "Swagger UI in headless Chromium: \"Try it out\" on an item read (scripts/swagger-ui-test.sh)"
scripts/swagger-ui-test.sh

step "Observability: rules, dashboards and alerts against a real Prometheus under k6 load"
screenshot=$(mktemp --suffix=.png)
SCREENSHOT=$screenshot observability/verify.sh
rm -f "$screenshot"

step "k6 counts the write limit's 429s apart and a 5xx as failed (load-tests/rate-limited-run.sh)"
load-tests/rate-limited-run.sh

step "Container images: built from the Dockerfile and run hardened with podman"
wait "$release_build" || { cat "$release_log" >&2; echo "the release build failed" >&2; exit 1; }
tail -n 1 "$release_log"
rm -f "$release_log"
cargo build --release --locked --bins
scripts/container-test.sh

step "Hostile clients over HTTP/1.1 and HTTP/2 against the release binaries (scripts/hostile-clients.sh)"
scripts/hostile-clients.sh

step "What telemetry costs: throughput with telemetry off and on (figures, not a timed test)"
BENCH_SECONDS=2 observability/bench-telemetry.sh

step "The benchmarks run (1 s per measurement, small data sets, output discarded; docs/performance.md comes from a full run)"
bench_out=$(mktemp -d)
BENCH_DATA=1 BENCH_DATA_SIZES=1000,5000 BENCH_SECONDS=1 BENCH_RATES=500,2000 BENCH_OUT=$bench_out \
  INSTRUCTIONS_N=300 INSTRUCTIONS_REPEAT=1 load-tests/bench.sh | tail -n 3
grep -q '^| item read by id' "$bench_out/performance.md"
grep -q '^| item-by-id-postgres | ' "$bench_out/performance.md"
grep -q '^| sqlite | 5,000' "$bench_out/performance-data.md"
grep -q '^| postgres | 5,000' "$bench_out/performance-data.md"
SOAK_RATE=300 SOAK_WARMUP=5 SOAK_SECONDS=20 BENCH_OUT=$bench_out python3 load-tests/soak_memory.py | tail -n 2
grep -q 'RSS' "$bench_out/soak-memory.md"
rm -rf "$bench_out"

step "The README's run command, end to end"
scripts/smoke-run.sh

step "The documentation's commands, run against that system (scripts/docs-test.py)"
python3 scripts/docs-test.py

# One closing line for the whole suite, summed over every test binary cargo ran.
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "tests: %d passed, %d failed\n", passed, failed }' "$results"
rm -f "$results"
