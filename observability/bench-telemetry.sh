#!/usr/bin/env bash
# What full telemetry costs: throughput of one read endpoint (GET /v1/items/{id}) with
# telemetry off and fully on, alternating, in one run on this machine (release build).
#   off: LOG_LEVEL=off, OTEL_TRACES_SAMPLER=always_off, no exporter
#   ids: JSON access log per request to a file with trace and span ids (read from the caller or
#        made here) and propagated, no exporter: what every request pays when spans are not
#        exported or not sampled
#   on:  as ids, and every request traced (always_on) and exported over OTLP/HTTP to a local
#        receiver
# Metrics are recorded in all three: they are not optional. Target (issue 17): full telemetry,
# log line + trace ids + metrics, costs <= 10% of throughput; "on" adds an exported span per
# request beside it.
# The service is pinned to CPU 0 and wrk to CPU 1, so they do not fight over one core.
# Usage: observability/bench-telemetry.sh   (installs wrk if needed; loopback only)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/common.sh
command -v wrk >/dev/null || apt_install wrk

cargo build --release --locked --bins >/dev/null 2>&1
bin=${CARGO_TARGET_DIR:-target}/release
scratch=$(mktemp -d /tmp/meridian-bench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$scratch"; }
trap cleanup EXIT
duration=${BENCH_SECONDS:-8}

# An OTLP/HTTP receiver that accepts and discards spans.
sink_port=$(free_port)
python3 - "$sink_port" <<'PY' &
import http.server, sys
class Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200); self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *args): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
PY
pids+=($!)

run() { # mode -> requests per second
  local mode=$1 addr=127.0.0.1:$(free_port) telemetry
  if [ "$mode" = on ]; then
    telemetry=(LOG_LEVEL=info OTEL_TRACES_SAMPLER=always_on
               OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$sink_port")
  elif [ "$mode" = ids ]; then
    telemetry=(LOG_LEVEL=info OTEL_TRACES_SAMPLER=always_on)
  else
    telemetry=(LOG_LEVEL=off OTEL_TRACES_SAMPLER=always_off)
  fi
  taskset -c 0 env "${telemetry[@]}" BIND_ADDR="$addr" METRICS_ADDR=127.0.0.1:0 DUMMY_API_KEY=bench-key-0123456789 \
    SECRET_MESSAGE=s DATABASE_URL="sqlite://$scratch/$mode-$RANDOM.db" "$bin/items" >>"$scratch/$mode.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 100); do curl -fsS -o /dev/null "http://$addr/readyz" 2>/dev/null && break; sleep 0.1; done
  local id
  id=$(curl -fsS -X POST "http://$addr/v1/items" -H 'X-API-Key: bench-key-0123456789' \
    -H 'Content-Type: application/json' -d '{"name":"bench"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  wrk -t1 -c16 -d1s "http://$addr/v1/items/$id" >/dev/null # warm up
  taskset -c 1 wrk -t1 -c16 -d"${duration}s" "http://$addr/v1/items/$id" | awk '/Requests\/sec/ {print $2}'
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
}

declare -A total=([off]=0 [ids]=0 [on]=0)
echo "GET /v1/items/{id}, wrk -t1 -c16 on CPU 1, items on CPU 0, ${duration}s per run"
for mode in off ids on off ids on off ids on; do
  rps=$(run "$mode")
  printf '  telemetry %-3s %10.0f req/s\n' "$mode" "$rps"
  total[$mode]=$(python3 -c "print(${total[$mode]} + $rps)")
done
python3 - "${total[off]}" "${total[ids]}" "${total[on]}" <<'PY'
import sys
off, ids, on = (float(v) / 3 for v in sys.argv[1:])
cost, exported = 1 - ids / off, 1 - on / off
print(f"mean: off {off:.0f} req/s, ids {ids:.0f} req/s, on {on:.0f} req/s")
print(f"log line + trace ids + metrics cost {cost:.1%} of throughput "
      f"(target <= 10%: {'met' if cost <= 0.10 else 'NOT met'}); "
      f"with every span exported {exported:.1%}")
PY
