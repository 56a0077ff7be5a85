#!/usr/bin/env bash
# Proves the dashboards and rules against real engines: starts both services (built binaries),
# Debian's Prometheus scraping them every second with our rules loaded, drives a bounded k6
# load with faults switched on (so error, latency, circuit and target-down alerts have data),
# then evaluates every dashboard and rule expression (check_queries.py). Optionally saves a
# screenshot of Prometheus' graph page (SCREENSHOT=path.png; needs chromium).
# Usage: observability/verify.sh   (after `cargo build --workspace --bins`)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/common.sh
ensure_observability_tools >/dev/null

bin=${BIN_DIR:-${CARGO_TARGET_DIR:-target}/debug}
scratch=$(mktemp -d /tmp/meridian-obs.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$scratch"
}
trap cleanup EXIT
fail() { echo "verify: $*" >&2; exit 1; }

echo "==> Static checks: rules, rule unit tests, Alertmanager routes, dashboard ConfigMaps"
promtool check rules observability/prometheus/rules.yml
(cd observability/prometheus && promtool test rules rules.test.yml)
amtool check-config observability/alertmanager/alertmanager.yml
route_of() { amtool config routes test --config.file=observability/alertmanager/alertmanager.yml "$@" 2>/dev/null; }
[ "$(route_of severity=page service=items)" = slack-pages ] || fail "pages must route to slack-pages"
[ "$(route_of severity=ticket service=items)" = slack-tickets ] || fail "tickets must route to slack-tickets"
[ "$(kubectl kustomize observability/grafana | grep -c 'grafana_dashboard: "1"')" = 2 ] \
  || fail "both dashboards must render as sidecar ConfigMaps"
python3 -m unittest discover -s observability -p 'test_*.py'

key=observability-test-key-0123
items_addr=127.0.0.1:$(free_port); items_metrics=127.0.0.1:$(free_port)
timezones_addr=127.0.0.1:$(free_port); timezones_metrics=127.0.0.1:$(free_port)
prometheus_addr=127.0.0.1:$(free_port); unreachable=127.0.0.1:$(free_port)

BIND_ADDR=$timezones_addr METRICS_ADDR=$timezones_metrics DUMMY_API_KEY=$key \
  "$bin/timezones" >"$scratch/timezones.log" 2>&1 &
pids+=($!)
BIND_ADDR=$items_addr METRICS_ADDR=$items_metrics DUMMY_API_KEY=$key SECRET_MESSAGE=s \
  TIMEZONES_URL="http://$timezones_addr" DATABASE_URL="sqlite://$scratch/items.db" \
  "$bin/items" >"$scratch/items.log" 2>&1 &
pids+=($!)
wait_for() { # url, what
  for _ in $(seq 1 200); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done
  fail "$2 did not come up ($1)"
}
wait_for "http://$timezones_addr/readyz" timezones
wait_for "http://$items_addr/readyz" items

# Our rules, evaluated every second instead of every 30 s so a short run has data.
sed 's/interval: 30s/interval: 1s/' observability/prometheus/rules.yml >"$scratch/rules.yml"
cat >"$scratch/prometheus.yml" <<CONFIG
global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: [rules.yml]
scrape_configs:
  - job_name: meridian-items
    static_configs: [{targets: ["$items_metrics"]}]
  - job_name: meridian-timezones
    static_configs: [{targets: ["$timezones_metrics"]}]
  # Nothing listens here: gives the target-down alert something to find.
  - job_name: meridian-unreachable
    static_configs: [{targets: ["$unreachable"]}]
CONFIG
promtool check config "$scratch/prometheus.yml" >/dev/null
prometheus --config.file="$scratch/prometheus.yml" --storage.tsdb.path="$scratch/tsdb" \
  --web.listen-address="$prometheus_addr" >"$scratch/prometheus.log" 2>&1 &
pids+=($!)
wait_for "http://$prometheus_addr/-/ready" prometheus

curl -fsS -o /dev/null "http://$items_addr/v1/greeting?tz=UTC" # one healthy hop first
# Faults: items' item and greeting routes take 300 ms and half of them fail, and timezones
# fails every conversion (so items' circuit opens and it falls back).
admin() { curl -fsS -o /dev/null -X PUT "http://$1/admin/faults" -H "X-API-Key: $key" \
  -H 'Content-Type: application/json' -d "$2"; }
admin "$timezones_addr" '{"error_rate": 1.0, "paths": ["/v1/convert"]}'
admin "$items_addr" '{"delay_ms": 300, "error_rate": 0.5, "paths": ["/v1/items", "/v1/greeting"]}'
echo "==> k6: ${K6_DURATION:-20s} of mixed traffic at ${K6_RATE:-40}/s (faults on)"
k6 run --no-usage-report --quiet --summary-export "$scratch/k6.json" \
  -e ITEMS_URL="http://$items_addr" -e TIMEZONES_URL="http://$timezones_addr" -e API_KEY=$key \
  -e RATE="${K6_RATE:-40}" -e DURATION="${K6_DURATION:-20s}" load-tests/traffic.js >"$scratch/k6.log" 2>&1 \
  || { cat "$scratch/k6.log"; fail "k6 failed"; }
python3 - "$scratch/k6.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))["metrics"]
print(f"k6: {m['http_reqs']['count']} requests, p95 {m['http_req_duration']['p(95)']:.1f} ms")
PY
sleep 3 # two more scrapes and rule evaluations

if [ -n "${SCREENSHOT:-}" ]; then
  python3 - "$prometheus_addr" "$SCREENSHOT" <<'PY'
import subprocess, sys, urllib.parse
addr, out = sys.argv[1], sys.argv[2]
exprs = [
    'sum by (service, route) (rate(http_server_requests_total[30s]))',
    'histogram_quantile(0.99, sum by (service, route, le) (rate(http_server_request_duration_seconds_bucket[30s])))',
]
params = {}
for i, e in enumerate(exprs):
    params.update({f"g{i}.expr": e, f"g{i}.tab": "0", f"g{i}.range_input": "40s", f"g{i}.stacked": "0"})
url = f"http://{addr}/graph?" + urllib.parse.urlencode(params)
subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--hide-scrollbars", "--window-size=1400,1900",
                "--virtual-time-budget=8000", f"--screenshot={out}", url],
               check=True, capture_output=True, timeout=120)
with open(out, "rb") as png:
    header = png.read(24)
width, height = int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")
assert header[:8] == b"\x89PNG\r\n\x1a\n" and (width, height) == (1400, 1900), (header, width, height)
print(f"screenshot: {out} ({width}x{height})")
PY
fi

echo "==> Evaluating every dashboard and rule expression against Prometheus"
python3 observability/check_queries.py "http://$prometheus_addr" \
  "http://$items_metrics/metrics" "http://$timezones_metrics/metrics"
