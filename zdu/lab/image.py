"""Build the lab node image offline: a debootstrap base plus the sample gateway and sshd.

Two layers, each cached by tag:

* ``zdupgrade-base:bookworm``: ``debootstrap --variant=minbase`` into a temp dir, then
  ``tar -C DIR -c . | docker import - zdupgrade-base:bookworm`` (no registry needed).
* ``zdupgrade-node:<sha>``: ``docker build`` FROM the base, adding both gateway versions and the
  node init; ``<sha>`` hashes every file that goes in, so any change rebuilds and an unchanged
  tree reuses the image.

Set ``ZDU_LAB_ROOTFS`` to an existing debootstrap tree to skip debootstrap.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

BASE_IMAGE = "zdupgrade-base:bookworm"
NODE_REPOSITORY = "zdupgrade-node"
GATEWAY_DIR = Path(__file__).resolve().parent / "gateway"
DEBIAN_SUITE = "bookworm"
DEBIAN_PACKAGES = "openssh-server,python3,curl,procps,iproute2"
DEFAULT_MIRROR = "http://deb.debian.org/debian"

DOCKERFILE = f"""\
FROM {BASE_IMAGE}
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
COPY gateway.py gateway-1.0.ini node_init.py node_reset.sh /tmp/zdu/
RUN set -e; \\
    for v in 1.0 2.0; do \\
        d=/opt/gateway-$v; mkdir -p $d/bin $d/conf $d/run $d/logs; \\
        install -m 755 /tmp/zdu/gateway.py $d/bin/gateway; echo $v > $d/VERSION; \\
    done; \\
    install -m 644 /tmp/zdu/gateway-1.0.ini /opt/gateway-1.0/conf/gateway.ini; \\
    install -m 755 /tmp/zdu/node_init.py /usr/local/sbin/zdu-node-init; \\
    install -m 755 /tmp/zdu/node_reset.sh /usr/local/sbin/zdu-node-reset; \\
    mkdir -p /etc/gateway /run/sshd /var/tmp/zdupgrade; \\
    install -d -m 700 /root/.ssh; \\
    usermod -p '*' root; \\
    rm -f /etc/ssh/ssh_host_*; rm -rf /tmp/zdu
CMD ["/usr/local/sbin/zdu-node-init"]
"""

# the files of GATEWAY_DIR that go into the image
IMAGE_FILES = ("gateway.py", "gateway-1.0.ini", "node_init.py", "node_reset.sh")


class ImageError(RuntimeError):
    """The lab image could not be built."""


def _docker(*args: str, input_stream: int | None = None, timeout: float | None = 900) -> str:
    """Run the docker CLI; raise ImageError with its output on failure."""
    proc = subprocess.run(["docker", *args], stdin=input_stream, capture_output=True, text=True,
                          timeout=timeout, check=False)
    if proc.returncode != 0:
        raise ImageError(f"docker {' '.join(args[:2])} failed ({proc.returncode}):\n{proc.stderr or proc.stdout}")
    return proc.stdout


def image_exists(tag: str) -> bool:
    """True if ``tag`` is present in the local Docker engine."""
    return subprocess.run(["docker", "image", "inspect", tag], capture_output=True, check=False).returncode == 0


def content_hash() -> str:
    """Short sha256 of the Dockerfile and every file copied into the node image."""
    digest = hashlib.sha256(DOCKERFILE.encode())
    for name in IMAGE_FILES:
        digest.update(b"\0" + name.encode() + b"\0")
        digest.update((GATEWAY_DIR / name).read_bytes())
    return digest.hexdigest()[:12]


def node_image_tag() -> str:
    """The tag the node image of the current tree has (built or not)."""
    return f"{NODE_REPOSITORY}:{content_hash()}"


def _debootstrap(target: Path, mirror: str) -> None:
    if shutil.which("debootstrap") is None:
        raise ImageError("debootstrap is not installed (run scripts/setup.sh)")
    cmd = ["debootstrap", "--variant=minbase", f"--include={DEBIAN_PACKAGES}", DEBIAN_SUITE,
           str(target), mirror]
    log.info("building rootfs: %s", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ImageError(f"debootstrap failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def _import_rootfs(rootfs: Path, tag: str) -> None:
    """``tar -C rootfs -c . | docker import - tag`` (device nodes and apt caches left out)."""
    tar = subprocess.Popen(
        ["tar", "-C", str(rootfs), "--numeric-owner", "--exclude=./dev/*", "--exclude=./proc/*",
         "--exclude=./sys/*", "--exclude=./var/cache/apt/archives/*.deb",
         "--exclude=./var/lib/apt/lists/*", "-c", "."],
        stdout=subprocess.PIPE)
    try:
        assert tar.stdout is not None
        _docker("import", "-", tag, input_stream=tar.stdout.fileno())
    finally:
        if tar.stdout is not None:
            tar.stdout.close()
        if tar.wait() != 0:
            raise ImageError(f"tar of {rootfs} failed ({tar.returncode})")


def ensure_base_image(*, mirror: str | None = None, rootfs: str | Path | None = None) -> str:
    """Return :data:`BASE_IMAGE`, building it with debootstrap + docker import if missing.

    ``rootfs`` (or ``$ZDU_LAB_ROOTFS``) names an existing debootstrap tree to import instead.
    """
    if image_exists(BASE_IMAGE):
        return BASE_IMAGE
    started = time.monotonic()
    given = rootfs or os.environ.get("ZDU_LAB_ROOTFS")
    if given and (Path(given) / "usr/sbin/sshd").exists():
        _import_rootfs(Path(given), BASE_IMAGE)
    else:
        with tempfile.TemporaryDirectory(prefix="zdu-rootfs-", dir="/var/tmp") as tmp:
            target = Path(tmp) / "rootfs"
            _debootstrap(target, mirror or os.environ.get("ZDU_DEBIAN_MIRROR", DEFAULT_MIRROR))
            _import_rootfs(target, BASE_IMAGE)
    log.info("built %s in %.1fs", BASE_IMAGE, time.monotonic() - started)
    return BASE_IMAGE


def ensure_image(*, mirror: str | None = None, rootfs: str | Path | None = None) -> str:
    """Return the tag of the node image for the current tree, building what is missing."""
    tag = node_image_tag()
    if image_exists(tag):
        return tag
    ensure_base_image(mirror=mirror, rootfs=rootfs)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="zdu-image-") as tmp:
        context = Path(tmp)
        (context / "Dockerfile").write_text(DOCKERFILE)
        for name in IMAGE_FILES:
            shutil.copy2(GATEWAY_DIR / name, context / name)
        # the legacy builder needs no registry: FROM resolves to the local base image
        _docker("build", "--pull=false", "-q", "-t", tag, "--label", "zdupgrade.lab=node",
                str(context))
    log.info("built %s in %.1fs", tag, time.monotonic() - started)
    return tag
