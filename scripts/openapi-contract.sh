#!/usr/bin/env bash
# The API contract, checked the way a consumer meets it. Starts both debug binaries (as
# scripts/dast.sh does), fetches their live OpenAPI documents, and:
#  1. lints them with Spectral against .spectral.yaml (spectral:oas and the OWASP API ruleset;
#     any error, warning, info or hint fails);
#  2. generates a Python client from each with openapi-python-client and runs
#     scripts/openapi/contract_client.py through them against the running services: the CRUD
#     happy path, the timezone lookups, and one error of each class, each status declared by
#     the document and each error a problem+json body.
# Installs its tools itself, each in its own directory under ~/.cache/meridian/tools.
# Usage: scripts/openapi-contract.sh   (after cargo build --bins)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/common.sh

spectral_dir=$(npm_tool spectral @stoplight/spectral-cli@6.16.3)
[ -d "$spectral_dir/node_modules/@stoplight/spectral-owasp-ruleset" ] \
  || npm install --silent --no-audit --no-fund --prefix "$spectral_dir" \
    @stoplight/spectral-owasp-ruleset@2.0.1 >/dev/null
# The generated clients run on what the generator itself needs (httpx, attrs).
venv_tool openapi-python-client openapi-python-client==0.29.1
repo=$PWD
scratch=$(mktemp -d /tmp/meridian-contract.XXXXXX)

key=contract-api-key-0123456789
start_services "$scratch" "$key"

# The ruleset's `extends` resolve from node_modules beside it, and its overrides name the
# documents by file: ruleset, documents and a link to the installed packages share a directory.
lint="$scratch/lint"
mkdir -p "$lint"
ln -s "$spectral_dir/node_modules" "$lint/node_modules"
cp .spectral.yaml "$lint/.spectral.yaml"
curl -fsS -o "$lint/items.json" "$ITEMS_URL_HERE/openapi.json"
curl -fsS -o "$lint/timezones.json" "$TIMEZONES_URL_HERE/openapi.json"
(cd "$lint" && "$spectral_dir/node_modules/.bin/spectral" lint items.json timezones.json \
  --ruleset .spectral.yaml --fail-severity hint --display-only-failures)
echo "  spectral: items.json and timezones.json, 0 errors, 0 warnings (.spectral.yaml)"

clients="$scratch/clients"
mkdir -p "$clients"
for service in items timezones; do
  cp "$lint/$service.json" "$clients/$service.json"
  # It warns that ruff is not on PATH (it would only reformat) and still writes the client.
  (cd "$clients" && openapi-python-client generate --path "$service.json" --meta none \
    --output-path "${service}_client") >"$scratch/generate-$service.log" 2>&1 \
    || { cat "$scratch/generate-$service.log"; exit 1; }
  if grep -q "will not be generated\|Unable to parse" "$scratch/generate-$service.log"; then
    cat "$scratch/generate-$service.log"
    echo "openapi-python-client could not read part of the $service document" >&2
    exit 1
  fi
done
python "$repo/scripts/openapi/contract_client.py" "$clients" "$ITEMS_URL_HERE" \
  "$TIMEZONES_URL_HERE" "$key"

if grep -E '"level":"ERROR"|panicked' "$scratch"/*.log; then
  echo "the services logged errors or panics (above)" >&2
  exit 1
fi
