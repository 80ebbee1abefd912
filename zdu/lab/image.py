"""Build the lab node image offline: a debootstrap base plus systemd units for sshd and the sample gateway.

Two layers, each cached by tag:

* ``zdupgrade-base:bookworm-<sha>``: ``debootstrap --variant=minbase`` into a temp dir, then
  ``tar -C DIR -c . | docker import - TAG`` (no registry needed); ``<sha>`` hashes the package list.
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

DEBIAN_SUITE = "bookworm"
# systemd is PID 1 of a node; docker.io brings the docker CLI (its engine is left out of the image,
# see ROOTFS_EXCLUDE) and docker-compose the compose CLI, for the products that run in containers
DEBIAN_PACKAGES = ("openssh-server,python3,curl,procps,iproute2,systemd,systemd-sysv,dbus,"
                   "docker.io,docker-compose")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
BASE_REPOSITORY = "zdupgrade-base"
BASE_IMAGE = f"{BASE_REPOSITORY}:{DEBIAN_SUITE}-" + hashlib.sha256(DEBIAN_PACKAGES.encode()).hexdigest()[:8]
NODE_REPOSITORY = "zdupgrade-node"
LAB_DIR = Path(__file__).resolve().parent
GATEWAY_DIR = LAB_DIR / "gateway"
# what the node runs docker with: the engine of the host, through its socket
ROOTFS_EXCLUDE = ("./usr/sbin/dockerd", "./usr/bin/containerd*", "./usr/sbin/runc", "./usr/bin/ctr",
                  "./usr/bin/docker-proxy", "./usr/sbin/docker-proxy")
# units that make no sense in a container (no devices, consoles, network or clock of its own) or
# that the node must not run (a docker engine: the host's is used)
MASKED_UNITS = (
    "systemd-networkd.service", "systemd-networkd.socket", "systemd-networkd-wait-online.service",
    "systemd-resolved.service", "systemd-timesyncd.service", "systemd-udevd.service",
    "systemd-udev-trigger.service", "systemd-udevd-control.socket", "systemd-udevd-kernel.socket",
    "systemd-udev-settle.service", "systemd-hwdb-update.service", "systemd-modules-load.service",
    "systemd-remount-fs.service", "systemd-firstboot.service", "systemd-sysctl.service",
    "getty.target", "getty@.service", "console-getty.service", "container-getty@.service",
    "serial-getty@.service", "sys-kernel-config.mount", "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount", "sys-fs-fuse-connections.mount", "dev-hugepages.mount",
    "dev-mqueue.mount", "proc-sys-fs-binfmt_misc.automount", "systemd-binfmt.service",
    "ssh.service", "ssh.socket", "docker.service", "docker.socket", "containerd.service",
    "apt-daily.timer", "apt-daily-upgrade.timer", "dpkg-db-backup.timer", "e2scrub_all.timer",
    "e2scrub_reap.service", "fstrim.timer", "systemd-tmpfiles-clean.timer")

DOCKERFILE = f"""\
FROM {BASE_IMAGE}
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 container=docker
COPY gateway.py gateway-1.0.ini boot.sh node_init.py node_reset.sh /tmp/zdu/
COPY units/ /etc/systemd/system/
RUN set -e; \\
    for v in 1.0 2.0; do \\
        d=/opt/gateway-$v; mkdir -p $d/bin $d/conf $d/run $d/logs; \\
        install -m 755 /tmp/zdu/gateway.py $d/bin/gateway; echo $v > $d/VERSION; \\
    done; \\
    install -m 644 /tmp/zdu/gateway-1.0.ini /opt/gateway-1.0/conf/gateway.ini; \\
    install -m 755 /tmp/zdu/boot.sh /usr/local/sbin/zdu-boot; \\
    install -m 755 /tmp/zdu/node_init.py /usr/local/sbin/zdu-node-init; \\
    install -m 755 /tmp/zdu/node_reset.sh /usr/local/sbin/zdu-node-reset; \\
    mkdir -p /etc/gateway /var/tmp/zdupgrade /etc/systemd/system/multi-user.target.wants; \\
    for u in {" ".join(MASKED_UNITS)}; do ln -sf /dev/null /etc/systemd/system/$u; done; \\
    for u in zdu-node-init.service zdu-sshd.service; do \\
        ln -sf /etc/systemd/system/$u /etc/systemd/system/multi-user.target.wants/$u; done; \\
    : > /etc/machine-id; \\
    install -d -m 700 /root/.ssh; \\
    usermod -p '*' root; \\
    rm -f /etc/ssh/ssh_host_*; rm -rf /tmp/zdu
STOPSIGNAL SIGRTMIN+3
CMD ["/usr/local/sbin/zdu-boot"]
"""

# the files that go into the image (relative to zdu/lab), and where the build context has them
IMAGE_FILES = {"gateway/gateway.py": "gateway.py", "gateway/gateway-1.0.ini": "gateway-1.0.ini",
               "node/boot.sh": "boot.sh", "node/node_init.py": "node_init.py",
               "node/node_reset.sh": "node_reset.sh",
               "node/units/zdu-node-init.service": "units/zdu-node-init.service",
               "node/units/zdu-sshd.service": "units/zdu-sshd.service",
               "node/units/gateway@.service": "units/gateway@.service"}


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
    for name in sorted(IMAGE_FILES):
        digest.update(b"\0" + name.encode() + b"\0")
        digest.update((LAB_DIR / name).read_bytes())
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
         "--exclude=./var/lib/apt/lists/*", *(f"--exclude={x}" for x in ROOTFS_EXCLUDE), "-c", "."],
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
    if given and all((Path(given) / f).exists() for f in ("usr/sbin/sshd", "lib/systemd/systemd", "usr/bin/docker")):
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
        for name, target in IMAGE_FILES.items():
            (context / target).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(LAB_DIR / name, context / target)
        # the legacy builder needs no registry: FROM resolves to the local base image
        _docker("build", "--pull=false", "-q", "-t", tag, "--label", "zdupgrade.lab=node",
                str(context))
    log.info("built %s in %.1fs", tag, time.monotonic() - started)
    return tag


# ---------------------------------------------------------------------------- product images

APP_REPOSITORY = "zdupgrade-app"
# a slim image of the node base: python3 and the libraries it loads, nothing else (the sample
# module images are `docker save`d and loaded on every node: ~25 MB instead of ~300)
APP_BASE_DOCKERFILE = f"""\
FROM {BASE_IMAGE} AS full
RUN set -e; mkdir -p /slim/usr/bin /slim/usr/lib /slim/etc /slim/tmp; \\
    cp -a /usr/bin/python3.11 /slim/usr/bin/; ln -s python3.11 /slim/usr/bin/python3; \\
    cp -a /usr/lib/python3.11 /slim/usr/lib/; \\
    rm -rf /slim/usr/lib/python3.11/test /slim/usr/lib/python3.11/idlelib /slim/usr/lib/python3.11/tkinter \\
           /slim/usr/lib/python3.11/ensurepip /slim/usr/lib/python3.11/lib2to3 /slim/usr/lib/python3.11/pydoc_data; \\
    for lib in $(ldd /usr/bin/python3.11 /usr/lib/python3.11/lib-dynload/*.so 2>/dev/null \\
                 | awk '/=> \\// {{print $3}}' | sort -u) /lib64/ld-linux-x86-64.so.2; do \\
        cp -L --parents "$lib" /slim; done; \\
    printf 'root:x:0:0:root:/root:/nonexistent\\n' > /slim/etc/passwd; \\
    printf 'root:x:0:\\n' > /slim/etc/group; chmod 1777 /slim/tmp
FROM scratch
COPY --from=full /slim/ /
"""

APP_DOCKERFILE = """\
FROM {base}
COPY app/ /opt/app/
ENV ZDU_APP_MODULE={module} ZDU_APP_NAME={app_name} PYTHONDONTWRITEBYTECODE=1
CMD ["/usr/bin/python3", "/opt/app/bin/service", "serve"]
"""


def _build(tag: str, dockerfile: str, files: dict[str, tuple[bytes, int]] | None = None) -> None:
    """``docker build`` a context of ``dockerfile`` and ``files`` (relative path: content, mode)."""
    with tempfile.TemporaryDirectory(prefix="zdu-image-") as tmp:
        context = Path(tmp)
        (context / "Dockerfile").write_text(dockerfile)
        for rel, (data, mode) in (files or {}).items():
            target = context / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            target.chmod(mode)
        _docker("build", "--pull=false", "-q", "-t", tag, "--label", "zdupgrade.lab=app", str(context))


def ensure_app_image(module: str, version: str, app_name: str) -> str:
    """Return the tag of the sample module image ``module`` ``version`` (the lab gateway program in
    module mode, see ``gateway.py``), building it (and the slim base) when missing."""
    ensure_base_image()
    base = f"{APP_REPOSITORY}:base-" + hashlib.sha256(APP_BASE_DOCKERFILE.encode()).hexdigest()[:12]
    if not image_exists(base):
        _build(base, APP_BASE_DOCKERFILE)
    dockerfile = APP_DOCKERFILE.format(base=base, module=module, app_name=app_name)
    program = (GATEWAY_DIR / "gateway.py").read_bytes()
    digest = hashlib.sha256(dockerfile.encode() + b"\0" + version.encode() + b"\0" + program).hexdigest()[:12]
    tag = f"{APP_REPOSITORY}:{module}-{version}-{digest}"
    if not image_exists(tag):
        _build(tag, dockerfile, {"app/bin/service": (program, 0o755), "app/VERSION": (f"{version}\n".encode(), 0o644),
                                 "app/logs/.keep": (b"", 0o644), "app/run/.keep": (b"", 0o644)})
        log.info("built %s", tag)
    return tag
