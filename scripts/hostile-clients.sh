#!/usr/bin/env bash
# Hostile clients at the protocol level, over HTTP/1.1 and HTTP/2 (h2c with prior knowledge),
# against the release binaries of both services: bodies past the limit with no length, rapid
# and provoked resets, CONTINUATION floods and oversized header lists, heads that never end,
# readers that stop, connection floods past the cap. Each check starts a fresh process on
# 127.0.0.1 with short clocks (500 ms), prints what it measured against its limit, and ends in
# a few seconds; the processes are killed when it ends. The last line is "N passed, M failed".
# Which limit each check proves: docs/resilience.md, "Limits a hostile client meets".
# Usage: scripts/hostile-clients.sh [SUBSTRING...]   (after cargo build --release --bins)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/common.sh

# h2 brings hpack and hyperframe, which craft the frames; all three pinned.
venv_tool hostile h2==4.4.1 hpack==4.2.0 hyperframe==6.1.0
"$TOOLS_DIR/hostile/bin/python" scripts/hostile/hostile.py --bin-dir target/release "$@"
