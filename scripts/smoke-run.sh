#!/usr/bin/env bash
# Proves the README's run command as a newcomer uses it: starts scripts/run.sh (release profile,
# the default; free ports, a scratch SQLite file), makes a real request across the items →
# timezones hop and a write, runs the k6 smoke scenario against it (10 s at 20 requests/s; fails
# on a threshold breach; checks that it deleted exactly the items it created), then sends Ctrl-C
# as a terminal does (SIGINT to run.sh's process group) and expects both services to stop and
# the script to exit 0. The Ctrl-C check then runs 5 more times with the release build and twice
# with the dev build, and a service killed with SIGKILL must make run.sh stop the other and
# exit non-zero. Bounded: every wait has a limit.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/common.sh
ensure_k6

# macOS ships bash 3.2: the run command may use nothing newer. No bash 3.2 runs here, so this
# is a static check for what 3.2 lacks (wait -n: 4.3, with ids 5.1; mapfile, associative
# arrays, case conversion, coproc, |&, &>>, ;& and ;;&: 4.0; local -n: 4.3; EPOCH*: 5.0).
newer=$(grep -nE '\bwait -n\b|\b(mapfile|readarray|coproc)\b|declare -A|local -n|\$\{[A-Za-z_]+(,,|\^\^)|\|&|&>>|;;?&|EPOCH(SECONDS|REALTIME)' \
  scripts/run.sh | grep -vE '^[0-9]+:[[:space:]]*#' || true)
[ -z "$newer" ] || { echo "smoke-run: scripts/run.sh uses what macOS's bash 3.2 lacks:" >&2; echo "$newer" >&2; exit 1; }

scratch=$(mktemp -d /tmp/meridian-smoke.XXXXXX)
run_pid=""
service_pids=()
cleanup() {
  # The services run in process groups of their own under run.sh: end them first, also any
  # that outlived a run.sh that died.
  [ -z "$run_pid" ] || pkill -KILL -P "$run_pid" 2>/dev/null || true
  [ "${#service_pids[@]}" = 0 ] || kill -KILL "${service_pids[@]}" 2>/dev/null || true
  [ -z "$run_pid" ] || kill -KILL -- "-$run_pid" 2>/dev/null || true
  rm -rf "$scratch"
}
trap cleanup EXIT
fail() { echo "smoke-run: $*" >&2; cat "$log" >&2; exit 1; }

# Starts run.sh in a process group of its own, as a terminal starts a command, with its own
# ports and database; sets run_pid, items_addr, timezones_addr and log. With "early", returns
# as soon as the build is done, while the services start.
start_system() {
  local profile=$1 name=$2
  items_addr=127.0.0.1:$(free_port)
  timezones_addr=127.0.0.1:$(free_port)
  log=$scratch/$name.log
  set -m
  MERIDIAN_PROFILE=$profile ITEMS_ADDR=$items_addr TIMEZONES_ADDR=$timezones_addr \
    ITEMS_METRICS_ADDR=127.0.0.1:$(free_port) TIMEZONES_METRICS_ADDR=127.0.0.1:$(free_port) \
    DATABASE_URL="sqlite://$scratch/$name.db" LOG_FORMAT=json scripts/run.sh >"$log" 2>&1 &
  run_pid=$!
  set +m
  for _ in $(seq 1 6000); do
    if [ "${3:-}" = early ] && grep -qs 'Finished `' "$log"; then return 0; fi
    if grep -qs "Swagger UI: http://$items_addr/docs" "$log"; then
      mapfile -t -O "${#service_pids[@]}" service_pids < <(pgrep -P "$run_pid")
      return 0
    fi
    kill -0 "$run_pid" 2>/dev/null || fail "run.sh exited early"
    sleep 0.01
  done
  fail "no Swagger UI URL within 60 s"
}

# Waits (30 s at most) for run.sh to end; sets run_status.
wait_for_exit() {
  for _ in $(seq 1 300); do kill -0 "$run_pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$run_pid" 2>/dev/null && fail "still running 30 s after $1"
  run_status=0
  wait "$run_pid" || run_status=$?
  run_pid=""
}

ctrl_c_stops_both() {
  kill -INT -- "-$run_pid"
  wait_for_exit Ctrl-C
  [ "$run_status" = 0 ] || fail "run.sh exited $run_status after Ctrl-C"
  [ "$(grep -c '"message":"stopped"' "$log")" = 2 ] || fail "both services should log 'stopped'"
  grep -q 'exited unexpectedly' "$log" && fail "Ctrl-C was reported as a crash"
  return 0
}

start_system release first
greeting=$(curl -fsS "http://$items_addr/v1/greeting?tz=Asia/Tokyo")
[[ $greeting == *'"source":"timezones"'* ]] || fail "greeting did not cross the hop: $greeting"
status=$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://$items_addr/v1/items" \
  -H 'X-API-Key: local-dev-api-key-change-me' -H 'Content-Type: application/json' \
  -d '{"name":"smoke"}')
[ "$status" = 201 ] || fail "create answered $status"
[ -f "$scratch/first.db" ] || fail "SQLite file was not created"

k6 run --no-usage-report --quiet -e SCENARIO=smoke -e ITEMS_URL="http://$items_addr" \
  -e TIMEZONES_URL="http://$timezones_addr" -e SUMMARY_DIR="$scratch" load-tests/meridian.js \
  >"$scratch/k6.out" 2>&1 || { cat "$scratch/k6.out" >&2; fail "k6 smoke scenario failed"; }
cat "$scratch/k6.out"
# k6 deletes what it created (its own threshold fails otherwise), and only that.
left=$(curl -fsS "http://$items_addr/v1/items?tag=k6&limit=100")
[[ $left == *'"items":[]'* ]] || fail "k6 left items behind: $left"
kept=$(curl -fsS "http://$items_addr/v1/items?name=smoke&limit=100")
[[ $kept == *'"name":"smoke"'* ]] || fail "k6's cleanup deleted an item it did not create"

# Cleanup at soak size: a soak at its defaults (100/s for 2 h) creates about 72,000 items.
# seed-items gives this run's tag 30,000 items beside what the run creates itself (sending
# 300,000 requests of the mix would take minutes), and the run's teardown must delete them all,
# and only them.
soak_tag=k6-run-soak-size
DATABASE_URL="sqlite://$scratch/first.db" target/release/seed-items 30000 --tag "$soak_tag" >/dev/null
before=$(curl -fsS "http://$items_addr/v1/items?tag=$soak_tag&limit=1")
[[ $before == *'"name":'* ]] || fail "seed-items wrote no item with the run's tag: $before"
k6 run --no-usage-report --quiet -e SCENARIO=smoke -e DURATION=3s -e RUN_TAG="$soak_tag" \
  -e ITEMS_URL="http://$items_addr" -e TIMEZONES_URL="http://$timezones_addr" \
  -e SUMMARY_DIR="$scratch" load-tests/meridian.js >"$scratch/k6-soak-size.out" 2>&1 \
  || { cat "$scratch/k6-soak-size.out" >&2; fail "k6 run with 30,000 items to clean up failed"; }
cat "$scratch/k6-soak-size.out"
left=$(curl -fsS "http://$items_addr/v1/items?tag=$soak_tag&limit=100")
[[ $left == *'"items":[]'* ]] || fail "the run left items with its tag behind: $left"
kept=$(curl -fsS "http://$items_addr/v1/items?name=smoke&limit=100")
[[ $kept == *'"name":"smoke"'* ]] || fail "the soak-size cleanup deleted an item it did not create"
echo "smoke-run: a run with 30,000 seeded items and its own under its tag left none behind"
ctrl_c_stops_both

for round in 1 2 3 4 5; do
  start_system release "release-$round"
  ctrl_c_stops_both
done
for round in 1 2; do
  start_system dev "dev-$round"
  ctrl_c_stops_both
done
# Ctrl-C while the services start (launch, readiness wait): wherever it lands, exit 0.
for round in 1 2 3; do
  start_system release "starting-$round" early
  kill -INT -- "-$run_pid"
  wait_for_exit "Ctrl-C during start-up"
  [ "$run_status" = 0 ] || fail "run.sh exited $run_status after Ctrl-C during start-up"
done
echo "smoke-run: Ctrl-C stopped both services and run.sh exited 0, 6 times with the release build, twice with the dev build, 3 times during start-up"

# A service that really dies: run.sh stops the other and fails.
start_system release crash
timezones_pid=$(pgrep -P "$run_pid" -x timezones) || fail "no timezones process under run.sh"
kill -KILL "$timezones_pid"
wait_for_exit "timezones was killed"
[ "$run_status" != 0 ] || fail "run.sh exited 0 although timezones died"
grep -q 'exited unexpectedly: timezones' "$log" || fail "run.sh did not name the service that died"
[ "$(grep -c '"message":"stopped"' "$log")" = 1 ] || fail "items should have stopped gracefully"
echo "smoke-run: hop, write and Ctrl-C all work; a killed service fails the run (greeting: $greeting)"
