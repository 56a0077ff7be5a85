#!/usr/bin/env bash
# Builds both services and runs them on 127.0.0.1, items wired to timezones:
#   timezones  http://127.0.0.1:8081        items  http://127.0.0.1:8080  (SQLite in ./data)
# Ctrl-C stops both cleanly. Any setting from docs/configuration.md can be exported
# first; ITEMS_ADDR, TIMEZONES_ADDR, ITEMS_METRICS_ADDR and TIMEZONES_METRICS_ADDR move the
# ports; MERIDIAN_PROFILE=dev skips the release build. Usage: ./scripts/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

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
export LOG_FORMAT=${LOG_FORMAT:-pretty}

BIND_ADDR=$timezones_addr METRICS_ADDR=$timezones_metrics_addr "$bin/timezones" &
timezones_pid=$!
BIND_ADDR=$items_addr METRICS_ADDR=$items_metrics_addr TIMEZONES_URL="http://$timezones_addr" \
  "$bin/items" &
items_pid=$!

stop() {
  trap - INT TERM
  echo "==> Stopping both services"
  kill -TERM "$items_pid" "$timezones_pid" 2>/dev/null || true
  local status=0
  wait "$items_pid" || status=$?
  wait "$timezones_pid" || status=$?
  exit "$status"
}
trap stop INT TERM

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

# If either service exits on its own, stop the other and report failure.
wait -n "$items_pid" "$timezones_pid" || true
echo "A service exited unexpectedly." >&2
kill -TERM "$items_pid" "$timezones_pid" 2>/dev/null || true
wait || true
exit 1
