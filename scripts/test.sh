#!/usr/bin/env bash
# The test command: sets up everything on a fresh Debian machine (root), then runs the suite.
#   scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export ZDU_LAB_REQUIRED=1 TESTCONTAINERS_RYUK_DISABLED=true
# the slowest tests at the end of every run: what to look at when the suite nears its 30 minutes
exec python3 -m pytest -q -p no:cacheprovider --durations=25 "$@"
