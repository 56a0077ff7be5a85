#!/usr/bin/env bash
# Runs a command with a throwaway PostgreSQL on 127.0.0.1, its URL in MERIDIAN_TEST_POSTGRES_URL
# (what the PostgreSQL tests read), and removes the database afterwards. The CI coverage job
# uses it; scripts/test.sh starts its own the same way.
# Usage: scripts/with-test-postgres.sh COMMAND [ARG...]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/common.sh
ensure_postgresql
start_test_postgres
export MERIDIAN_TEST_POSTGRES_URL="$TEST_POSTGRES_URL"
"$@"
