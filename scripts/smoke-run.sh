#!/usr/bin/env bash
# Proves the README's run command: starts scripts/run.sh (dev profile, free ports, a scratch
# SQLite file), makes a real request across the items → timezones hop and a write, runs the k6
# smoke scenario against it (10 s at 20 requests/s; fails on a threshold breach; checks that it
# deleted exactly the items it created), then sends
# Ctrl-C (SIGINT to the process group) and expects both services to stop and the script to
# exit 0. Bounded: every wait has a limit.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/common.sh
ensure_k6

scratch=$(mktemp -d /tmp/meridian-smoke.XXXXXX)
items_addr=127.0.0.1:$(free_port)
timezones_addr=127.0.0.1:$(free_port)
log=$scratch/run.log

set -m # own process group, so the script and both services get SIGINT as from a terminal
MERIDIAN_PROFILE=dev ITEMS_ADDR=$items_addr TIMEZONES_ADDR=$timezones_addr \
  ITEMS_METRICS_ADDR=127.0.0.1:$(free_port) TIMEZONES_METRICS_ADDR=127.0.0.1:$(free_port) \
  DATABASE_URL="sqlite://$scratch/items.db" LOG_FORMAT=json scripts/run.sh >"$log" 2>&1 &
run_pid=$!
set +m
cleanup() {
  kill -KILL -- "-$run_pid" 2>/dev/null || true
  wait "$run_pid" 2>/dev/null || true
  rm -rf "$scratch"
}
trap cleanup EXIT
fail() { echo "smoke-run: $*" >&2; cat "$log" >&2; exit 1; }

for _ in $(seq 1 600); do
  grep -qs "Swagger UI: http://$items_addr/docs" "$log" && break
  kill -0 "$run_pid" 2>/dev/null || fail "run.sh exited early"
  sleep 0.1
done
grep -q "Swagger UI: http://$items_addr/docs" "$log" || fail "no Swagger UI URL within 60 s"

greeting=$(curl -fsS "http://$items_addr/v1/greeting?tz=Asia/Tokyo")
[[ $greeting == *'"source":"timezones"'* ]] || fail "greeting did not cross the hop: $greeting"
status=$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://$items_addr/v1/items" \
  -H 'X-API-Key: local-dev-api-key-change-me' -H 'Content-Type: application/json' \
  -d '{"name":"smoke"}')
[ "$status" = 201 ] || fail "create answered $status"
[ -f "$scratch/items.db" ] || fail "SQLite file was not created"

k6 run --no-usage-report --quiet -e SCENARIO=smoke -e ITEMS_URL="http://$items_addr" \
  -e TIMEZONES_URL="http://$timezones_addr" -e SUMMARY_DIR="$scratch" load-tests/meridian.js \
  >"$scratch/k6.out" 2>&1 || { cat "$scratch/k6.out" >&2; fail "k6 smoke scenario failed"; }
cat "$scratch/k6.out"
# k6 deletes what it created (its own threshold fails otherwise), and only that.
left=$(curl -fsS "http://$items_addr/v1/items?tag=k6&limit=100")
[[ $left == *'"items":[]'* ]] || fail "k6 left items behind: $left"
kept=$(curl -fsS "http://$items_addr/v1/items?name=smoke&limit=100")
[[ $kept == *'"name":"smoke"'* ]] || fail "k6's cleanup deleted an item it did not create"

kill -INT -- "-$run_pid"
for _ in $(seq 1 300); do kill -0 "$run_pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$run_pid" 2>/dev/null && fail "still running 30 s after Ctrl-C"
code=0; wait "$run_pid" || code=$?
[ "$code" = 0 ] || fail "run.sh exited $code after Ctrl-C"
[ "$(grep -c '"message":"stopped"' "$log")" = 2 ] || fail "both services should log 'stopped'"
echo "smoke-run: hop, write and Ctrl-C all work (greeting: $greeting)"
