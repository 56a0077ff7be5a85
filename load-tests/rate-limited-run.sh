#!/usr/bin/env bash
# Proves how meridian.js counts the write rate limit: items runs with a limit far below the
# creates the mix sends, so 429s are certain, not a matter of timing. Two k6 runs of the load
# scenario, 5 s at 200 requests/s:
#   1. no faults: must pass, with writes_rate_limited > 0 and not one failed request (the
#      429s are answers of a rate-limited write, counted apart);
#   2. every greeting answered 5xx by fault injection: must breach http_req_failed (a 5xx is
#      still a failure, whatever else is excused).
# Latency limits are widened: this is about what counts as failed, on a debug build sharing
# two cores. Usage: load-tests/rate-limited-run.sh   (after `cargo build --workspace --bins`)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/common.sh
ensure_k6

key=rate-limited-run-key-0123
# 2 writes/s after a burst of 20, which k6's setup spends on its 20 seed items: over 5 s the
# mix sends about 100 creates (a tenth of 1,000 requests), of which about 12 can be answered
# 201. For no 429 at all, fewer than 20 creates would have to come out of 1,000 draws at 10%:
# p < 1e-20.
ITEMS_WRITE_RATE=2 ITEMS_WRITE_BURST=20 start_services "$(mktemp -d /tmp/meridian-k6-429.XXXXXX)" "$key"
scratch=$SERVICES_DIR
fail() { echo "rate-limited-run: $*" >&2; exit 1; }

run_k6() { # name; prints k6's exit status
  local status=0
  k6 run --no-usage-report --quiet --summary-export "$scratch/$1.json" -e SCENARIO=load \
    -e RATE=200 -e DURATION=5s -e P95_MS=5000 -e P99_MS=10000 -e API_KEY=$key \
    -e ITEMS_URL="$ITEMS_URL_HERE" -e TIMEZONES_URL="$TIMEZONES_URL_HERE" \
    -e SUMMARY_DIR="$scratch" load-tests/meridian.js >"$scratch/$1.log" 2>&1 || status=$?
  echo "$status"
}
# "limited failed" from a summary export: the write 429s counted, the failed requests.
counts() {
  python3 - "$1" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))["metrics"]
print(m.get("writes_rate_limited", {}).get("count", 0), m["http_req_failed"]["passes"])
PY
}

status=$(run_k6 limited)
cat "$scratch/limited.log"
read -r limited failed < <(counts "$scratch/limited.json")
[ "$status" = 0 ] || fail "k6 exited $status with the write limit's 429s ($limited of them, $failed failed requests)"
[ "$limited" -gt 0 ] || fail "no write was rate-limited: the run proves nothing"
[ "$failed" = 0 ] || fail "$failed requests counted as failed"

curl -fsS -o /dev/null -X PUT "$ITEMS_URL_HERE/admin/faults" -H "X-API-Key: $key" \
  -H 'Content-Type: application/json' -d '{"error_rate": 1.0, "paths": ["/v1/greeting"]}'
status=$(run_k6 faulty)
read -r limited_faulty failed_faulty < <(counts "$scratch/faulty.json")
[ "$status" = 99 ] || { cat "$scratch/faulty.log"; fail "k6 exited $status with every greeting a 5xx (want 99)"; }
[ "$failed_faulty" -gt 0 ] || fail "the 5xx greetings were not counted as failed"
echo "rate-limited-run: $limited writes rate-limited and 0 failed requests: passed;" \
  "with the greetings failing, $failed_faulty failed requests breached the threshold (k6 exit 99)"
