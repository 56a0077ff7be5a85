#!/usr/bin/env bash
# DAST: schemathesis against both services' OpenAPI documents, the way the dast workflow runs
# it. Starts the debug binaries on free loopback ports (items on a scratch SQLite file, write
# rate limit lifted so fuzzing is not answered 429), generates at least 2,000 cases per service
# across schemathesis' phases, and fails on any server error, undocumented status code or
# response that breaks its schema, or on a panic or ERROR line in the services' logs.
# Bounded: each schemathesis run is stopped after 180 s.
# Usage: scripts/dast.sh   (after cargo build --bins)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/common.sh

venv_tool schemathesis schemathesis==4.32.5
repo=$PWD
scratch=$(mktemp -d /tmp/meridian-dast.XXXXXX)

key=dast-api-key-0123456789
start_services "$scratch" "$key"

# Runs schemathesis in the scratch directory (it writes its caches into the working directory)
# and prints how many cases it generated.
fuzz() {
  local url=$1 log=$2
  shift 2
  (cd "$scratch" && timeout 180 schemathesis --config-file "$repo/scripts/dast/schemathesis.toml" \
    run "$url/openapi.json" \
    --checks not_a_server_error,status_code_conformance,response_schema_conformance \
    --seed 1 --generation-database none --continue-on-failure --no-color \
    -H "X-API-Key: $key" "$@") >"$log" 2>&1 || { cat "$log"; return 1; }
  sed -n 's/^ *\([0-9][0-9]*\) generated.*/\1/p' "$log" | tail -n 1
}

total=0
for service in timezones items; do
  url=$([ "$service" = timezones ] && echo "$TIMEZONES_URL_HERE" || echo "$ITEMS_URL_HERE")
  # items at 200 fell to 1,596 API cases once its schemas stated their limits (its stateful
  # phase ran 21 scenarios; why so few was not established); at 300 it generates 3,670.
  examples=$([ "$service" = timezones ] && echo 700 || echo 300)
  # The fault switch is fuzzed on its own: a random valid body would turn on injected 503s for
  # the other operations' run. Reset afterwards.
  cases=$(fuzz "$url" "$scratch/$service.out" --max-examples "$examples" --exclude-name 'PUT /admin/faults')
  switch=$(fuzz "$url" "$scratch/$service-faults.out" --max-examples 200 \
    --include-name 'PUT /admin/faults' --phases examples,coverage,fuzzing)
  curl -fsS -o /dev/null -X PUT -H "X-API-Key: $key" -H 'Content-Type: application/json' \
    -d '{}' "$url/admin/faults"
  echo "  $service: $((cases + switch)) cases ($cases API, $switch fault switch), no failures"
  [ $((cases + switch)) -ge 2000 ] || { echo "fewer than 2,000 cases for $service" >&2; exit 1; }
  total=$((total + cases + switch))
done

if grep -E '"level":"ERROR"|panicked' "$scratch"/*.log; then
  echo "the services logged errors or panics under fuzzing (above)" >&2
  exit 1
fi
echo "dast: $total cases, 0 server errors, 0 undocumented statuses, 0 schema violations"
