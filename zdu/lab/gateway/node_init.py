#!/usr/bin/env python3
"""PID 1 of a lab node: configure and start sshd and gateway 1.0, reap orphans, stop on SIGTERM.

Environment: ZDU_NODE_NAME, ZDU_NODE_IP, ZDU_SSH_PORT, ZDU_SERVICE_PORT.  The lab bind-mounts
``/lab`` (read-only) holding ``ssh_host_ed25519_key`` and ``authorized_keys``.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

SSHD_CONFIG = Path("/etc/ssh/sshd_config_zdu")


def reap(*_: object) -> None:
    """Collect every exited child (daemons started over ssh/exec are reparented to us)."""
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def install(src: Path, dst: Path, mode: int) -> None:
    """Copy ``src`` to ``dst`` owned by root with ``mode``."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    os.chown(dst, 0, 0)
    os.chmod(dst, mode)


def configure(name: str, ip: str, ssh_port: int, service_port: int) -> None:
    """Write node identity, ssh keys and config, and the 1.0 listen port."""
    etc = Path("/etc/gateway")
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "node").write_text(name + "\n")
    (etc / "host").write_text(ip + "\n")
    install(Path("/lab/ssh_host_ed25519_key"), Path("/etc/ssh/zdu_host_ed25519_key"), 0o600)
    Path("/root/.ssh").mkdir(mode=0o700, exist_ok=True)
    install(Path("/lab/authorized_keys"), Path("/root/.ssh/authorized_keys"), 0o600)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    SSHD_CONFIG.write_text(
        f"ListenAddress {ip}:{ssh_port}\n"
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
    )
    ini = Path("/opt/gateway-1.0/conf/gateway.ini")
    ini.write_text(re.sub(r"(?m)^listen_port=.*$", f"listen_port={service_port}", ini.read_text()))
    for pidfile in Path("/opt").glob("gateway-*/run/*.pid"):
        pidfile.unlink()   # left over from before a container restart


def main() -> int:
    """Boot the node and stay PID 1 until SIGTERM."""
    name = os.environ["ZDU_NODE_NAME"]
    ip = os.environ["ZDU_NODE_IP"]
    ssh_port = int(os.environ.get("ZDU_SSH_PORT", "2222"))
    service_port = int(os.environ.get("ZDU_SERVICE_PORT", "8080"))
    signal.signal(signal.SIGCHLD, reap)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    configure(name, ip, ssh_port, service_port)
    subprocess.run(["/usr/sbin/sshd", "-f", str(SSHD_CONFIG), "-E", "/var/log/sshd.log"], check=True)
    print(f"zdu-node {name}: sshd on {ip}:{ssh_port}", flush=True)
    if os.environ.get("ZDU_START_GATEWAY", "1") == "1":
        subprocess.run(["/opt/gateway-1.0/bin/gateway", "start", "--host", ip], check=False)
    print(f"zdu-node {name}: ready", flush=True)
    while True:
        signal.pause()


if __name__ == "__main__":
    sys.exit(main())
