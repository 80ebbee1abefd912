#!/usr/bin/env bash
# The main job on the embedded default: bring up the local lab (3 OpenSSH nodes + HAProxy),
# send traffic through HAProxy, upgrade every node from gateway 1.0 to 2.0, print the summary,
# tear the lab down.  Sets up everything on a fresh Debian machine (root).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >&2
exec ./zdupgrade --lab --old_install_dir /opt/gateway-1.0 --new_install_dir /opt/gateway-2.0 "$@"
