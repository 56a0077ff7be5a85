#!/usr/bin/env bash
# Builds both services and runs them on 127.0.0.1, items wired to timezones:
#   timezones  http://127.0.0.1:8081        items  http://127.0.0.1:8080  (SQLite in ./data)
# Ctrl-C stops both cleanly. Any setting from docs/configuration.md can be exported
# first; ITEMS_ADDR, TIMEZONES_ADDR, ITEMS_METRICS_ADDR and TIMEZONES_METRICS_ADDR move the
# ports; MERIDIAN_PROFILE=dev skips the release build. Usage: ./scripts/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# Waits until a service has exited, however often a signal interrupts `wait`; returns its status.
reap() {
  local code
  while :; do
    code=0
    wait "$1" || code=$?
    kill -0 "$1" 2>/dev/null || return "$code"
  done
}

# Stops whichever services have started (the shell's running background jobs, so a signal
# that lands mid-launch finds them too; a foreground `curl` or `sleep` the same Ctrl-C killed is
# not one) and exits 0 if each stopped cleanly.
stop() {
  local services status=0 code pid
  services=$(jobs -pr)
  forced=0
  # A second Ctrl-C does not wait for the drain.
  trap 'kill -KILL $services 2>/dev/null || true; forced=1' INT TERM HUP
  echo "==> Stopping both services"
  kill -TERM $services 2>/dev/null || true
  for pid in $services; do
    code=0
    reap "$pid" || code=$?
    # 143: our SIGTERM arrived before the service listened for it (Ctrl-C during start-up).
    case "$code" in 0 | 143) ;; *) status=1 ;; esac
  done
  [ "$forced" = 0 ] || status=130
  exit "$status"
}
trap stop INT TERM HUP

profile=${MERIDIAN_PROFILE:-release}
echo "==> Building both services ($profile profile)"
cargo build --locked --profile "$profile" --bins
case "$profile" in dev) out=debug ;; *) out=$profile ;; esac
bin=${CARGO_TARGET_DIR:-target}/$out

items_addr=${ITEMS_ADDR:-127.0.0.1:8080}
timezones_addr=${TIMEZONES_ADDR:-127.0.0.1:8081}
items_metrics_addr=${ITEMS_METRICS_ADDR:-127.0.0.1:9464}
timezones_metrics_addr=${TIMEZONES_METRICS_ADDR:-127.0.0.1:9465}
default_key=local-dev-api-key-change-me
# Local defaults for the two required secrets, unless they come from files (NAME_FILE): the
# services refuse a secret given both ways. (items' own DATABASE_URL default is ./data.)
[ -n "${DUMMY_API_KEY_FILE:-}" ] || export DUMMY_API_KEY=${DUMMY_API_KEY:-$default_key}
[ -n "${SECRET_MESSAGE_FILE:-}" ] || export SECRET_MESSAGE=${SECRET_MESSAGE:-this is the local secret message}
# One id secret for both processes, so both name a key by the same id (docs/security.md#key-ids).
[ -n "${API_KEY_ID_SECRET_FILE:-}" ] || export API_KEY_ID_SECRET=${API_KEY_ID_SECRET:-local-key-id-secret-change-me}
export LOG_FORMAT=${LOG_FORMAT:-pretty}


# Each service gets a process group of its own (job control on while it starts), so a
# terminal's Ctrl-C reaches this script alone and the script's trap is the one thing that stops
# them: a service that exits without it has died on its own. (In the terminal's group, the
# services took the SIGINT at the same moment as the script, and which of them the script saw
# first was down to timing.)
set -m
BIND_ADDR=$timezones_addr METRICS_ADDR=$timezones_metrics_addr "$bin/timezones" &
timezones_pid=$!
BIND_ADDR=$items_addr METRICS_ADDR=$items_metrics_addr TIMEZONES_URL="http://$timezones_addr" \
  "$bin/items" &
items_pid=$!
set +m

ready() { curl -fsS -o /dev/null "http://$1/readyz" 2>/dev/null; }
for _ in $(seq 1 100); do
  if ready "$timezones_addr" && ready "$items_addr"; then break; fi
  if ! kill -0 "$items_pid" 2>/dev/null || ! kill -0 "$timezones_pid" 2>/dev/null; then
    echo "A service failed to start; see its message above." >&2
    kill -TERM "$items_pid" "$timezones_pid" 2>/dev/null || true
    exit 1
  fi
  sleep 0.1
done

cat <<INFO

meridian is running (Ctrl-C stops both):
  items      http://$items_addr      Swagger UI: http://$items_addr/docs
  timezones  http://$timezones_addr      Swagger UI: http://$timezones_addr/docs
  metrics    http://$items_metrics_addr/metrics  http://$timezones_metrics_addr/metrics
INFO
if [ "${DUMMY_API_KEY:-}" = "$default_key" ]; then
  echo "  writes need  X-API-Key: $default_key  (the local default; export DUMMY_API_KEY to choose one)"
fi
echo

# Only a service that exits on its own leaves this loop: a signal to this script runs `stop`.
# It polls instead of `wait -n PID...` (bash 5.1), so that macOS's bash 3.2 runs it too; the
# sleep runs in the background because a signal interrupts `wait` at once, not a foreground sleep.
while kill -0 "$items_pid" 2>/dev/null && kill -0 "$timezones_pid" 2>/dev/null; do
  sleep 0.2 &
  wait $! || true
done
for pid in "$items_pid" "$timezones_pid"; do
  if ! kill -0 "$pid" 2>/dev/null; then
    code=0
    wait "$pid" || code=$?
    name=items; [ "$pid" = "$timezones_pid" ] && name=timezones
    echo "A service exited unexpectedly: $name (exit status $code); stopping the other." >&2
  fi
done
kill -TERM "$items_pid" "$timezones_pid" 2>/dev/null || true
wait || true
exit 1
