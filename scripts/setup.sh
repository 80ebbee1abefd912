#!/usr/bin/env bash
# Prepare a Debian 12 machine (as root) to develop and test zdupgrade, lab included.
# Idempotent: run it again at any time.
#
#   1. apt: docker.io haproxy debootstrap openssh-client openssh-server curl socat chromium tmux (skipped when present)
#   2. pip install -e '.[test,lab]' from the repo root
#   3. a Docker engine: if `docker info` fails, start `dockerd --bridge=none --iptables=false`
#      in the background (log: /var/log/zdu-dockerd.log) and wait for it
#   4. the lab node image: python3 -m zdu.lab image (debootstrap + docker import, ~1 min the first
#      time; ZDU_LAB_ROOTFS=DIR reuses an existing debootstrap tree)
#
# Environment: PYTHON (default python3), ZDU_DEBIAN_MIRROR, ZDU_LAB_ROOTFS, ZDU_SKIP_IMAGE=1.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
APT_PACKAGES=(docker.io haproxy debootstrap openssh-client openssh-server curl socat chromium tmux iproute2 util-linux procps)

say() { printf '[setup] %s\n' "$*"; }

if [[ "$(id -u)" -ne 0 ]]; then
    echo "scripts/setup.sh must run as root (it installs packages and starts dockerd)" >&2
    exit 1
fi

# ------------------------------------------------------------------------- 1. apt
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'; }
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    installed "$pkg" || missing+=("$pkg")
done
if ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
    missing+=(python3-pip)
fi
if ((${#missing[@]})); then
    say "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
else
    say "apt packages present"
fi

# ------------------------------------------------------------------------- 2. pip
pip_args=()
# Debian's own python refuses system-wide pip installs (PEP 668) outside a venv
if "$PYTHON" - <<'PY'
import os, sys, sysconfig
managed = os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))
sys.exit(0 if managed and sys.prefix == sys.base_prefix else 1)
PY
then
    pip_args+=(--break-system-packages)
fi
say "pip install -e '.[test,lab]'"
(cd "$REPO_ROOT" && "$PYTHON" -m pip install -q "${pip_args[@]}" -e '.[test,lab]')

# ------------------------------------------------------------------------- 3. dockerd
if docker info >/dev/null 2>&1; then
    say "docker engine running"
else
    say "starting dockerd --bridge=none --iptables=false (log /var/log/zdu-dockerd.log)"
    setsid nohup dockerd --bridge=none --iptables=false >>/var/log/zdu-dockerd.log 2>&1 </dev/null &
    for _ in $(seq 1 300); do
        docker info >/dev/null 2>&1 && break
        sleep 0.2
    done
    if ! docker info >/dev/null 2>&1; then
        echo "dockerd did not come up within 60 s; see /var/log/zdu-dockerd.log" >&2
        tail -n 20 /var/log/zdu-dockerd.log >&2 || true
        exit 1
    fi
    say "docker engine up"
fi

# ------------------------------------------------------------------------- 4. lab image
if [[ "${ZDU_SKIP_IMAGE:-0}" == 1 ]]; then
    say "ZDU_SKIP_IMAGE=1: lab image not built"
else
    say "building the lab node image (first time: debootstrap, about a minute)"
    tag="$(cd "$REPO_ROOT" && "$PYTHON" -m zdu.lab image)"
    say "lab image: $tag"
fi
say "done. Run the tests: cd $REPO_ROOT && $PYTHON -m pytest"
