"""Connect N nodes directly and through one shared bastion (plain sshd on loopback); print
the times and how many logins the bastion saw.  Run from the repository root as root:

    python3 benchmarks/bastion_bench.py [N]
"""
from __future__ import annotations

import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.sshd import SshdServer  # noqa: E402
from zdu.model import Node, SshSettings  # noqa: E402
from zdu.transport.ssh import SshHandler, SshPool  # noqa: E402


def main(count: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="zdu-bastion-bench-"))
    bastion = SshdServer(work / "bastion", host="127.0.0.220").start()
    nodes = [SshdServer(work / f"n{i}", host=f"127.0.0.{221 + i % 9}") for i in range(count)]
    try:
        key = bastion.client_key
        for n in nodes:
            (n.workdir / "authorized_keys").write_text(Path(f"{key}.pub").read_text())
            n.start()
        kh = work / "known_hosts"
        kh.write_text("".join(s.known_hosts_line() for s in (bastion, *nodes)))
        base = dict(known_hosts=str(kh), key_file=str(key), config_file=None, parallel=10)
        for label, settings in (("direct", SshSettings(**base)),
                                ("via bastion", SshSettings(**base, proxy_jump=(
                                    f"root@{bastion.host}:{bastion.port}",)))):
            pool = SshPool()
            handlers = [SshHandler(Node(f"n{i}", n.host, n.port), settings, pool=pool)
                        for i, n in enumerate(nodes)]
            t0 = time.monotonic()
            with ThreadPoolExecutor(max_workers=10) as ex:
                results = list(ex.map(lambda h: h.run("true").ok, handlers))
            elapsed = time.monotonic() - t0
            for h in handlers:
                h.close()
            print(f"{label:12s} {count} nodes, 10 at a time: {elapsed:6.2f} s "
                  f"({all(results) and 'all ok' or 'FAILURES'}); bastion logins so far: "
                  f"{bastion.accepted_logins()}")
    finally:
        for s in (bastion, *nodes):
            s.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 30)
