#!/usr/bin/env bash
# Swagger UI in a real browser: starts both services (debug build) on 127.0.0.1, creates an
# item, and drives items' /docs with headless Chromium (Debian's chromium, driven by
# playwright-core) through "Try it out" on the item read, which must show a 200. The
# screenshot is kept as a test artifact: target/test-artifacts/swagger-ui-try-it-out.png.
# Usage: scripts/swagger-ui-test.sh   (after cargo build --bins)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/common.sh

command -v chromium >/dev/null || apt_install chromium
tools=$(npm_tool playwright playwright-core@1.65.1)
artifacts=target/test-artifacts
mkdir -p "$artifacts"

scratch=$(mktemp -d /tmp/meridian-swagger.XXXXXX)
key=swagger-ui-api-key-0123456789
start_services "$scratch" "$key"

id=$(curl -fsS -X POST -H "X-API-Key: $key" -H 'Content-Type: application/json' \
  -d '{"name":"Tried from Swagger UI","tags":["docs"]}' "$ITEMS_URL_HERE/v1/items" \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
# Node resolves playwright-core from the script's directory: link the tools' copy there.
ln -sfn "$tools/node_modules" "$scratch/node_modules"
cp scripts/swagger-ui/try-it-out.mjs "$scratch/"
node "$scratch/try-it-out.mjs" "$ITEMS_URL_HERE" "$id" "$PWD/$artifacts/swagger-ui-try-it-out.png"
