#!/usr/bin/env python3
"""``zdu-node-init.service``: configure a lab node at boot, before its sshd starts.

Environment (``/etc/zdu-node.env``, written by the boot script from the container's):
ZDU_NODE_NAME, ZDU_NODE_IP, ZDU_SSH_PORT, ZDU_SERVICE_PORT, ZDU_START_GATEWAY (1: start gateway
1.0), and for a lab with a bastion ZDU_SSH_LISTEN (the address sshd listens on, default
ZDU_NODE_IP; the bastion's is 0.0.0.0, its network appears after boot) and ZDU_SSH_ALLOW_FROM
(sshd lets in only logins coming from that address: the bastion's).  The lab bind-mounts
``/lab`` (read-only) holding ``ssh_host_ed25519_key`` and ``authorized_keys``, and, for a product lab, ``product/product.sh`` run last (``boot``) (see zdu.lab.products).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

SSHD_CONFIG = Path("/etc/ssh/sshd_config_zdu")
PRODUCT_SCRIPT = Path("/lab/product/product.sh")


def install(src: Path, dst: Path, mode: int) -> None:
    """Copy ``src`` to ``dst`` owned by root with ``mode``."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    os.chown(dst, 0, 0)
    os.chmod(dst, mode)


def configure(name: str, ip: str, ssh_port: int, service_port: int, *, listen: str = "",
              allow_from: str = "") -> None:
    """Write node identity, ssh keys and config, and the 1.0 listen port.

    ``listen``: sshd's address (default ``ip``); ``allow_from``: the only client address whose
    logins sshd accepts (``AllowUsers *@ADDRESS``), or "" for any.
    """
    etc = Path("/etc/gateway")
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "node").write_text(name + "\n")
    (etc / "host").write_text(ip + "\n")
    install(Path("/lab/ssh_host_ed25519_key"), Path("/etc/ssh/zdu_host_ed25519_key"), 0o600)
    Path("/root/.ssh").mkdir(mode=0o700, exist_ok=True)
    install(Path("/lab/authorized_keys"), Path("/root/.ssh/authorized_keys"), 0o600)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    SSHD_CONFIG.write_text(
        f"ListenAddress {listen or ip}:{ssh_port}\n"
        "HostKey /etc/ssh/zdu_host_ed25519_key\n"
        "PidFile /run/sshd-zdu.pid\n"
        "PermitRootLogin prohibit-password\n"
        "PubkeyAuthentication yes\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "UsePAM no\n"
        "UseDNS no\n"
        "MaxStartups 100:30:200\n"
        "MaxSessions 50\n"
        "Subsystem sftp internal-sftp\n"
        "AcceptEnv LANG LC_*\n"
        + (f"AllowUsers *@{allow_from}\n" if allow_from else "")
    )
    ini = Path("/opt/gateway-1.0/conf/gateway.ini")
    ini.write_text(re.sub(r"(?m)^listen_port=.*$", f"listen_port={service_port}", ini.read_text()))
    for pidfile in Path("/opt").glob("gateway-*/run/*.pid"):
        pidfile.unlink()   # left over from before a container restart


def main() -> int:
    """Configure the node; queue gateway 1.0 (or the product's setup) to start."""
    name = os.environ["ZDU_NODE_NAME"]
    ip = os.environ["ZDU_NODE_IP"]
    configure(name, ip, int(os.environ.get("ZDU_SSH_PORT", "2222")),
              int(os.environ.get("ZDU_SERVICE_PORT", "8080")),
              listen=os.environ.get("ZDU_SSH_LISTEN", ""), allow_from=os.environ.get("ZDU_SSH_ALLOW_FROM", ""))
    if os.environ.get("ZDU_START_GATEWAY", "1") == "1":
        Path("/run/gateway").mkdir(exist_ok=True)
        Path("/run/gateway/1.0.env").write_text(f"GATEWAY_HOST={ip}\n")
        # --no-block: this unit is itself a start job; waiting here would deadlock the boot
        subprocess.run(["systemctl", "--no-block", "start", "gateway@1.0.service"], check=True)
    if PRODUCT_SCRIPT.exists():
        subprocess.run([str(PRODUCT_SCRIPT), "boot"], check=True)
    print(f"zdu-node {name}: configured (sshd on {ip})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
