"""The lab fleet: N real OpenSSH nodes in containers on loopback addresses, behind real HAProxy.

Every node is a container (``network_mode="host"``) from :func:`zdu.lab.image.ensure_image`;
its sshd listens only on its own address ``127.0.0.(11+i):2222`` with a host key the lab
generated, and gateway 1.0 serves on ``127.0.0.(11+i):8080``.  A host HAProxy balances
``127.0.0.1:18080`` over the nodes (backend ``gateways``, servers ``node-a`` ...), with its runtime
API on a unix socket in the lab dir and on ``127.0.0.1:19999``.

With ``bastion_subnet`` the lab has a **bastion**: one more node, in a network namespace of its
own, that is the only way to the others' sshd.  See :meth:`Lab._link_bastion` for how.

Containers and HAProxy are removed on :meth:`Lab.close`, on ``with`` exit, and at interpreter exit.
"""
from __future__ import annotations

import atexit
import concurrent.futures
import http.client
import json
import logging
import hashlib
import os
import re
import shlex
import shutil
import signal
import socket
import string
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Mapping, TypeVar

# the reaper image cannot be pulled offline; the lab removes its containers itself
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

import docker  # noqa: E402
import docker.errors  # noqa: E402
import yaml  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from testcontainers.core.container import DockerContainer  # noqa: E402

from zdu.lb.haproxy_api import LocalSocketApi, parse_servers_state
from zdu.model import Node  # noqa: E402
from zdu.lab.image import ensure_image  # noqa: E402
from zdu.lab.products import DOCKER_SOCKET, Product, make_product  # noqa: E402

log = logging.getLogger(__name__)

T = TypeVar("T")

FAULT_WORDS: frozenset[str] = frozenset(
    {"export", "upgrade", "check", "start", "stop", "health"}
    | {f"hang-{p}" for p in ("export", "upgrade", "check", "start", "stop", "health")})
"""Words :meth:`Lab.inject_fault` accepts (see ``zdu/lab/gateway/gateway.py``)."""

LAB_LABEL = "zdupgrade.lab"
OWNER_LABEL = "zdupgrade.lab.pid"
ID_LABEL = "zdupgrade.lab.id"
_ACTIVE_LABS: set[str] = set()     # ids of the labs of this process that are not closed
BACKEND = "gateways"
LbKind = Literal["none", "haproxy", "script"]


# what systemd as PID 1 needs from Docker (see zdu/lab/node/boot.sh).  Not --privileged: this
# host's dockerd lacks CAP_SYS_RESOURCE, and runc refuses to grant a container all capabilities.
SYSTEMD_RUN_OPTIONS: dict[str, Any] = {
    "cap_add": ["SYS_ADMIN",                        # mounts (cgroup, /run/*), namespaces of units
                "SYS_PTRACE"],                      # root reads /proc/PID/{cwd,exe} of other users, as on a host
    "security_opt": ["seccomp=unconfined"],
    "cgroupns": "private",                          # the node sees only its own cgroup subtree
    "init": False,
    "stop_signal": "SIGRTMIN+3",                    # systemd's "halt"
}
SYSTEMD_TMPFS = {"/run": "rw,nosuid,nodev,mode=755", "/run/lock": "rw,nosuid,nodev,noexec,mode=1777"}


class LabError(RuntimeError):
    """The lab could not be brought up or a lab action failed."""


@dataclass(frozen=True)
class LabNode:
    """One node of the lab and how to reach it."""

    name: str                # "Node-A"
    host: str                # "127.0.0.11"
    ssh_port: int            # 2222
    lb_server: str           # "node-a"
    service_port: int        # 8080
    container_name: str      # "zdu-lab-node-a"

    @property
    def url(self) -> str:
        """Base URL of this node's gateway, e.g. ``http://127.0.0.11:8080``."""
        return f"http://{self.host}:{self.service_port}"

    def model(self) -> Node:
        """This node as the product's :class:`zdu.model.Node`."""
        return Node(name=self.name, host=self.host, port=self.ssh_port, group="Gateway",
                    roles=("gateway",), lb_server=self.lb_server)


def wait_until(predicate: Callable[[], T], *, timeout: float, interval: float = 0.05,
               what: str = "condition") -> T:
    """Poll ``predicate`` until it returns a truthy value; raise LabError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        last: Exception | None = None
        try:
            value: T | None = predicate()
        except Exception as exc:  # noqa: BLE001 - polled probes fail until ready
            value, last = None, exc
        if value:
            return value
        if time.monotonic() >= deadline:
            raise LabError(f"timed out after {timeout:.0f}s waiting for {what}" + (f": {last}" if last else ""))
        time.sleep(interval)


def ssh_banner(host: str, port: int, timeout: float = 1.0) -> str:
    """The SSH identification line at ``host:port`` ("" when nothing answers with one)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            data = sock.recv(256)
    except OSError:
        return ""
    return data.decode(errors="replace").strip() if data.startswith(b"SSH-2.0-") else ""


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    """GET ``url`` (loopback only); return (status, body)."""
    parsed = url.split("://", 1)[1]
    hostport, _, path = parsed.partition("/")
    host, _, port = hostport.partition(":")
    if not host.startswith("127."):
        raise LabError(f"the lab only sends traffic to loopback, not {host}")
    conn = http.client.HTTPConnection(host, int(port or 80), timeout=timeout)
    try:
        conn.request("GET", "/" + path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    finally:
        conn.close()


def _keypair(comment: str) -> tuple[bytes, str]:
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return private, f"{public} {comment}"


def _write(path: Path, data: str | bytes, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    return path


def _parallel(fn: Callable[[T], Any], items: Iterable[T]) -> list[Any]:
    items = list(items)
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(items))) as pool:
        return list(pool.map(fn, items))


class Lab:
    """A running lab fleet.  Use as a context manager, or call :meth:`start` and :meth:`close`.

    >>> with Lab() as lab:                                # doctest: +SKIP
    ...     lab.exec("Node-A", "gateway status")
    """

    def __init__(self, *, size: int = 3, workdir: str | Path | None = None, image: str | None = None,
                 ssh_port: int = 2222, first_host: int = 11, service_port: int = 8080,
                 haproxy_port: int = 18080, haproxy_admin_port: int = 19999,
                 name_prefix: str = "zdu-lab", haproxy: bool = True, product: str = "gateway",
                 network: str = "127.0.0", bastion_subnet: str | None = None) -> None:
        """Describe the lab; nothing starts before :meth:`start`.

        ``product`` is what the nodes run (see :mod:`zdu.lab.products`): the sample ``gateway``,
        or ``tarball``, ``docker``, ``compose``.

        ``workdir`` holds keys, known_hosts, the HAProxy config and socket (default: a new temp
        dir, removed on close).  Node ``i`` gets address ``{network}.(first_host+i)`` (a loopback
        address: ``network`` is ``127.X.Y``).

        ``bastion_subnet`` (``10.X.Y``) adds a bastion at ``10.X.Y.2``, linked to this machine's
        ``10.X.Y.1``; the nodes' sshd then let in only logins that come from the bastion.
        """
        if not 1 <= size <= 26:
            raise ValueError("size must be 1..26")
        if not re.fullmatch(r"127\.\d{1,3}\.\d{1,3}", network):
            raise ValueError(f"network must be 127.X.Y (loopback), not {network!r}")
        if bastion_subnet is not None and not re.fullmatch(r"10\.\d{1,3}\.\d{1,3}", bastion_subnet):
            raise ValueError(f"bastion_subnet must be 10.X.Y, not {bastion_subnet!r}")
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="zdu-lab-")).resolve()
        self._image = image
        self.ssh_port = ssh_port
        self.service_port = service_port
        self.haproxy_port = haproxy_port
        self.haproxy_admin_port = haproxy_admin_port
        self._want_haproxy = haproxy
        self.name_prefix = name_prefix
        self.product: Product = make_product(product)
        letters = string.ascii_uppercase
        self._nodes = [
            LabNode(name=f"Node-{letters[i]}", host=f"{network}.{first_host + i}", ssh_port=ssh_port,
                    lb_server=f"node-{letters[i].lower()}", service_port=service_port,
                    container_name=f"{name_prefix}-node-{letters[i].lower()}")
            for i in range(size)]
        self.bastion_subnet = bastion_subnet
        self.bastion: LabNode | None = None
        """The bastion (not one of :attr:`nodes`: never upgraded, not in HAProxy), or None."""
        if bastion_subnet is not None:
            self.bastion = LabNode(name="Bastion", host=f"{bastion_subnet}.2", ssh_port=ssh_port,
                                   lb_server="bastion", service_port=service_port,
                                   container_name=f"{name_prefix}-bastion")
        self._containers: dict[str, DockerContainer] = {}
        self._haproxy: subprocess.Popen[bytes] | None = None
        self._closed = False
        self._lock = threading.Lock()
        self._docker: docker.DockerClient | None = None
        self._id = uuid.uuid4().hex

    # ------------------------------------------------------------------ paths

    @property
    def nodes(self) -> list[LabNode]:
        """The nodes, in order (Node-A first)."""
        return list(self._nodes)

    def _machines(self) -> list[LabNode]:
        """Every container of the lab: the nodes and the bastion."""
        return self._nodes + ([self.bastion] if self.bastion else [])

    @property
    def bastion_jump(self) -> str:
        """The bastion as a ``proxy_jump`` value: ``root@10.X.Y.2:2222``."""
        if self.bastion is None:
            raise LabError("this lab has no bastion")
        return f"root@{self.bastion.host}:{self.bastion.ssh_port}"

    def node(self, name: str) -> LabNode:
        """The node called ``name`` (``Node-A`` or its lb server name ``node-a``; or ``Bastion``)."""
        for node in self._machines():
            if name in (node.name, node.lb_server):
                return node
        raise KeyError(name)

    @property
    def key_file(self) -> Path:
        """The client private key (ed25519) installed as root's authorized key on every node."""
        return self.workdir / "id_ed25519"

    def host_public_key(self, node_name: str) -> str:
        """The node's (or the bastion's) ssh host key, ``ssh-ed25519 AAAA... root@NAME``."""
        node = self.node(node_name)
        return (self.workdir / "nodes" / node.name / "ssh_host_ed25519_key.pub").read_text().strip()

    @property
    def known_hosts(self) -> Path:
        """known_hosts with each node's real host key (``[127.0.0.11]:2222 ssh-ed25519 ...``)."""
        return self.workdir / "known_hosts"

    @property
    def haproxy_socket(self) -> Path:
        """Path of HAProxy's admin-level runtime API unix socket."""
        return self.workdir / "haproxy.sock"

    @property
    def haproxy_tcp(self) -> tuple[str, int]:
        """(host, port) of HAProxy's admin-level runtime API on TCP."""
        return ("127.0.0.1", self.haproxy_admin_port)

    @property
    def frontend_url(self) -> str:
        """URL of the HAProxy frontend, e.g. ``http://127.0.0.1:18080``."""
        return f"http://127.0.0.1:{self.haproxy_port}"

    @property
    def lb_script(self) -> Path:
        """An executable load-balancer hook (``lb-hook.sh ACTION NODE``, server in $ZDU_LB_SERVER)."""
        return self.workdir / "lb-hook.sh"

    @property
    def image(self) -> str:
        """The node image tag (built on first use)."""
        if self._image is None:
            self._image = ensure_image()
        return self._image

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> "Lab":
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> "Lab":
        """Bring up the nodes (concurrently) and HAProxy; return when all serve gateway 1.0."""
        atexit.register(self.close)
        _ACTIVE_LABS.add(self._id)
        image = self.image
        self._prepare_workdir()
        self._remove_stale_containers()
        if self._want_haproxy:
            self._start_haproxy()
        if self.bastion_subnet is not None:
            # everything of the subnet but the bastion's link is unreachable from here: a lost
            # link fails at once and never leaves the machine by the default route
            _ip("route", "replace", "unreachable", f"{self.bastion_subnet}.0/24")
        _parallel(lambda n: self._start_node(n, image), self._machines())
        _write(self.known_hosts, "".join(
            f"{_known_host(n.host, n.ssh_port)} {self.host_public_key(n.name)}\n" for n in self._machines()))
        self.wait_serving()
        if self._want_haproxy:
            self.wait_servers_up()
        return self

    def close(self) -> None:
        """Remove every container and stop HAProxy (idempotent; errors are logged, not raised)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        _ACTIVE_LABS.discard(self._id)
        for name, container in list(self._containers.items()):
            try:
                container.stop()
            except Exception as exc:  # noqa: BLE001 - keep tearing down
                log.warning("lab: removing %s failed: %s", name, exc)
        self._containers.clear()
        self._remove_product_containers()
        try:
            self.product.close(self)
        except Exception as exc:  # noqa: BLE001 - keep tearing down
            log.warning("lab: product clean-up failed: %s", exc)
        self._stop_haproxy()
        if self.bastion_subnet is not None:
            _ip("route", "del", "unreachable", f"{self.bastion_subnet}.0/24", check=False)
        if self._docker is not None:
            self._docker.close()
            self._docker = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        atexit.unregister(self.close)

    def _client(self) -> docker.DockerClient:
        if self._docker is None:
            self._docker = docker.from_env()
        return self._docker

    def _prepare_workdir(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        _write(self.workdir / ".gitignore", "*\n")
        private, public = _keypair("zdupgrade-lab")
        _write(self.key_file, private, 0o600)
        _write(self.workdir / "id_ed25519.pub", public + "\n")
        for node in self._machines():
            host_private, host_public = _keypair(f"root@{node.name}")
            ndir = self.workdir / "nodes" / node.name
            _write(ndir / "ssh_host_ed25519_key", host_private, 0o600)
            _write(ndir / "ssh_host_ed25519_key.pub", host_public + "\n")
            _write(ndir / "authorized_keys", public + "\n")
            if self.product.uses_docker:
                self.etc_gateway_dir(node).mkdir(parents=True, exist_ok=True)
        self._write_lb_script()
        self.product.prepare(self)

    def container_labels(self) -> dict[str, str]:
        """The labels of every container of this lab (nodes and the products' own)."""
        return {LAB_LABEL: str(self.workdir), OWNER_LABEL: str(os.getpid()), ID_LABEL: self._id}

    def etc_gateway_dir(self, node: LabNode) -> Path:
        """Host directory that is ``/etc/gateway`` on a node of a docker product (and in its containers)."""
        return self.workdir / "nodes" / node.name / "etc-gateway"

    def _remove_product_containers(self) -> None:
        """Remove the containers the nodes started on the host's engine (this lab's label or name)."""
        if not self.product.uses_docker:
            return
        client = self._client()
        try:
            found = {c.id: c for c in client.containers.list(all=True, filters={"label": f"{ID_LABEL}={self._id}"})}
            for node in self._nodes:
                found.update({c.id: c for c in client.containers.list(
                    all=True, filters={"name": f"^{node.container_name}-"})})
            for container in found.values():
                container.remove(force=True)
        except Exception as exc:  # noqa: BLE001 - keep tearing down
            log.warning("lab: removing product containers failed: %s", exc)

    def _remove_stale_containers(self) -> None:
        """Remove containers left by a lab that died; refuse to touch a live lab's containers."""
        client = self._client()
        for node in self._machines():
            try:
                container = client.containers.get(node.container_name)
            except docker.errors.NotFound:
                continue
            owner = _owner_alive(container.labels)
            if owner:
                raise LabError(f"container {node.container_name} belongs to a running lab (pid {owner}); "
                               "stop it, or use another name_prefix, first_host and ports")
            container.remove(force=True)
            log.warning("lab: removed stale container %s", node.container_name)
        for node in self._nodes:    # a dead lab's product containers (docker, compose)
            for container in client.containers.list(all=True, filters={"name": f"^{node.container_name}-"}):
                owner = _owner_alive(container.labels)
                if owner:
                    raise LabError(f"container {container.name} belongs to a running lab (pid {owner})")
                container.remove(force=True)
                log.warning("lab: removed stale container %s", container.name)

    def _start_node(self, node: LabNode, image: str) -> None:
        is_bastion = node is self.bastion
        container = (DockerContainer(image)
                     .with_name(node.container_name)
                     .with_env("ZDU_NODE_NAME", node.name)
                     .with_env("ZDU_NODE_IP", node.host)
                     .with_env("ZDU_SSH_PORT", str(node.ssh_port))
                     .with_env("ZDU_SERVICE_PORT", str(node.service_port))
                     .with_env("ZDU_START_GATEWAY", "1" if self.product.start_gateway and not is_bastion else "0")
                     .with_volume_mapping(str(self.workdir / "nodes" / node.name), "/lab", "ro"))
        if is_bastion:
            container = container.with_env("ZDU_SSH_LISTEN", "0.0.0.0")   # its link comes after boot
        elif self.bastion is not None:
            container = container.with_env("ZDU_SSH_ALLOW_FROM", self.bastion.host)
        if self.product.uses_docker and not is_bastion:
            container = (container.with_volume_mapping(DOCKER_SOCKET, DOCKER_SOCKET, "rw")
                         .with_volume_mapping(str(self.etc_gateway_dir(node)), "/etc/gateway", "rw"))
        container = (container
                     .with_kwargs(network_mode="none" if is_bastion else "host",
                                  labels=self.container_labels(), **SYSTEMD_RUN_OPTIONS))
        container.tmpfs.update(SYSTEMD_TMPFS)
        self._containers[node.name] = container
        container.start()
        if is_bastion:
            self._link_bastion()
        self._wait_node_ready(node)

    def _wait_node_ready(self, node: LabNode, timeout: float = 30.0) -> None:
        wait_until(lambda: ssh_banner(node.host, node.ssh_port), timeout=timeout,
                   what=f"sshd of {node.name} on {node.host}:{node.ssh_port}")
        if node is not self.bastion:
            wait_until(lambda: self.served_version(node.name) == "1.0", timeout=timeout,
                       what=f"gateway 1.0 on {node.url}")

    def _link_bastion(self) -> None:
        """Give the bastion's network namespace (a container with ``network_mode=none``) its link.

        Every lab node listens on a loopback address of this machine, where every connection of
        this machine comes from 127.0.0.1 -- so no sshd setting could tell the bastion from the
        control machine.  The bastion therefore lives in a network namespace of its own, linked
        to this machine by a veth pair (``10.X.Y.1`` here, ``10.X.Y.2`` the bastion), and reaches
        the nodes' loopback addresses over that link: in its namespace 127.0.0.0/8 is routed to
        ``10.X.Y.1`` (only 127.0.0.1 stays its own), and ``route_localnet`` on both ends of the
        pair lets loopback addresses cross it.  A node's sshd sees the bastion's logins come
        from ``10.X.Y.2``, and lets in only those (``AllowUsers *@10.X.Y.2``, see
        ``node_init.py``): a direct login from this machine is refused.  The control machine
        reaches the bastion at ``10.X.Y.2``; HAProxy and the traffic still use loopback.
        """
        assert self.bastion is not None and self.bastion_subnet is not None
        pid = str(self._wrapped(self.bastion.name).attrs["State"]["Pid"])
        here, there = _bastion_links(self.bastion.container_name)
        net = self.bastion_subnet
        _ip("link", "del", here, check=False)          # a stale end of a crashed lab's pair
        _ip("link", "add", here, "type", "veth", "peer", "name", there)
        _ip("link", "set", there, "netns", pid)
        _ip("addr", "add", f"{net}.1/30", "dev", here)
        _ip("link", "set", here, "up")
        _sysctl(f"net.ipv4.conf.{here}.route_localnet=1")
        inside = ("nsenter", "-t", pid, "-n")
        for args in ((IP, "link", "set", there, "name", "eth0"),
                     (IP, "addr", "add", f"{net}.2/30", "dev", "eth0"),
                     (IP, "link", "set", "eth0", "up"),
                     (IP, "addr", "del", "127.0.0.1/8", "dev", "lo"),
                     (IP, "addr", "add", "127.0.0.1/32", "dev", "lo"),
                     (IP, "route", "add", "127.0.0.0/8", "via", f"{net}.1", "dev", "eth0"),
                     (SYSCTL, "-qw", "net.ipv4.conf.eth0.route_localnet=1")):
            _run([*inside, *args])

    # ------------------------------------------------------------------ node actions

    def container(self, node_name: str) -> DockerContainer:
        """The testcontainers object of ``node_name``."""
        return self._containers[self.node(node_name).name]

    def _wrapped(self, node_name: str) -> Any:
        wrapped = self.container(node_name).get_wrapped_container()
        wrapped.reload()
        return wrapped

    def exec(self, node_name: str, cmd: str, *, timeout: float | None = 60.0) -> tuple[int, str]:
        """Run ``cmd`` with ``sh -c`` on the node via ``docker exec``; return (exit code, stdout+stderr).

        ``timeout`` kills the command (exit code 124 or 137) so a hung command cannot hang a test.
        """
        argv = ["sh", "-c", cmd]
        if timeout is not None:
            argv = ["timeout", "-k", "2", str(timeout), *argv]
        code, output = self.container(node_name).exec(argv)
        return int(code if code is not None else -1), output.decode(errors="replace")

    def running_versions(self, node_name: str) -> list[str]:
        """The versions (of the lab's product) with a live server on the node, e.g. ``["1.0"]``."""
        return self.product.running_versions(self, self.node(node_name))

    def served_version(self, node_name: str, timeout: float = 2.0) -> str | None:
        """The version the node's gateway answers on ``GET /`` directly, or None if it does not."""
        try:
            status, body = http_get(self.node(node_name).url + "/", timeout=timeout)
            return str(json.loads(body)["version"]) if status == 200 else None
        except (OSError, ValueError, KeyError, http.client.HTTPException):
            return None

    def form_cluster(self, node_names: Iterable[str], *, join_delay: float = 0.0) -> None:
        """Make the named nodes cache members of one cluster (``/etc/gateway/cluster``, see
        ``zdu/lab/gateway/gateway.py``): a gateway started from now on on one of them writes
        ``Members {size:N, ...}`` to its log ``join_delay`` seconds after it starts, and whenever
        the count of healthy members changes.  :meth:`reset` removes the membership."""
        members = [self.node(n) for n in node_names]
        spec = json.dumps({"peers": [f"{m.host}:{m.service_port}" for m in members], "join_delay": join_delay})
        for member in members:
            code, out = self.exec(member.name, f"printf '%s\\n' {shlex.quote(spec)} > /etc/gateway/cluster")
            if code != 0:
                raise LabError(f"form_cluster on {member.name}: {out}")

    def gateway_log(self, node_name: str, version: str) -> str:
        """The gateway log of ``version`` on the node (``/opt/gateway-V/logs/gateway.log``; "" if none)."""
        code, out = self.exec(node_name, f"cat /opt/gateway-{shlex.quote(version)}/logs/gateway.log 2>/dev/null")
        return out if code == 0 else ""

    def inject_fault(self, node_name: str, word: str) -> None:
        """Add fault ``word`` (see :data:`FAULT_WORDS`) to the node's ``/etc/gateway/faults``."""
        if word not in FAULT_WORDS:
            raise ValueError(f"unknown fault {word!r} (known: {', '.join(sorted(FAULT_WORDS))})")
        code, out = self.exec(node_name, f"echo {shlex.quote(word)} >> /etc/gateway/faults")
        if code != 0:
            raise LabError(f"inject_fault {word} on {node_name}: {out}")

    def clear_faults(self, node_name: str | None = None) -> None:
        """Remove every injected fault from ``node_name`` (default: every node)."""
        names = [node_name] if node_name else [n.name for n in self._nodes]
        for name in names:
            self.exec(name, "rm -f /etc/gateway/faults")

    def pause(self, node_name: str) -> None:
        """Freeze every process of the node (``docker pause``): it hangs without refusing."""
        self._wrapped(node_name).pause()

    def unpause(self, node_name: str) -> None:
        """Undo :meth:`pause`."""
        self._wrapped(node_name).unpause()

    def kill(self, node_name: str) -> None:
        """Crash the node (``docker kill``: SIGKILL to everything); :meth:`reset` boots it again."""
        self._wrapped(node_name).kill()

    def kill_sshd(self, node_name: str) -> None:
        """Kill the node's sshd listener (open sessions survive, new connections are refused)."""
        node = self.node(node_name)
        self.exec(node.name, "kill $(cat /run/sshd-zdu.pid)")
        wait_until(lambda: not ssh_banner(node.host, node.ssh_port, timeout=0.3), timeout=10,
                   what=f"sshd of {node.name} to stop")

    def reset(self, *, wait_up: bool = True) -> None:
        """Put every node back to the start state, fast.

        Gateway 1.0 running only, no faults, 2.0 stopped and its config removed, sshd up,
        crashed or paused containers back; every HAProxy server ``ready`` (and UP when ``wait_up``).
        The bastion, if any: up, with its sshd.
        """
        _parallel(self._reset_node, self._machines())
        self.product.reset(self)
        self.wait_serving()
        if self._haproxy is not None:
            for node in self._nodes:
                self.haproxy_cmd(f"set server {BACKEND}/{node.lb_server} state ready")
            if wait_up:
                self.wait_servers_up()

    def _reset_node(self, node: LabNode) -> None:
        wrapped = self._wrapped(node.name)
        if wrapped.status == "paused":
            wrapped.unpause()
        elif wrapped.status != "running":
            wrapped.start()
            if node is self.bastion:
                self._link_bastion()     # a new namespace: the old pair went with the old one
            self._wait_node_ready(node)
        code, out = self.exec(node.name, "/usr/local/sbin/zdu-node-reset", timeout=60)
        if code in (124, 137):
            raise LabError(f"reset of {node.name} did not finish within 60 s: {out}")
        if code != 0:
            raise LabError(f"reset of {node.name} failed ({code}): {out}")
        wait_until(lambda: ssh_banner(node.host, node.ssh_port), timeout=10, what=f"sshd of {node.name}")

    # ------------------------------------------------------------------ HAProxy

    def haproxy_config(self, *, socket_path: Path | None = None, frontend_port: int | None = None,
                       admin_port: int | None = None, pidfile: Path | None = None) -> str:
        """An HAProxy configuration balancing the lab's gateways (backend ``gateways``, one server
        per node, health-checked on ``/health``).  Defaults: this lab's own socket and ports; a test
        that starts a second instance (an HA pair) passes its own."""
        socket_path = socket_path or self.haproxy_socket
        frontend_port = frontend_port or self.haproxy_port
        servers = "\n".join(
            f"    server {n.lb_server} {n.host}:{n.service_port} check inter 200ms fall 2 rise 2"
            for n in self._nodes)
        admin = f"\n    stats socket ipv4@127.0.0.1:{admin_port} level admin" if admin_port else ""
        pid = f"\n    pidfile {pidfile}" if pidfile else ""
        return f"""\
global
    stats socket {socket_path} mode 600 level admin{admin}
    stats timeout 30s{pid}

defaults
    mode http
    option redispatch
    retries 3
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout check 1s
    timeout queue 5s

frontend gateway_in
    bind 127.0.0.1:{frontend_port}
    default_backend {BACKEND}

backend {BACKEND}
    balance roundrobin
    option httpchk GET /health
    http-check expect status 200
{servers}
"""

    def _start_haproxy(self) -> None:
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        config = _write(self.workdir / "haproxy.cfg", self.haproxy_config(
            admin_port=self.haproxy_admin_port, pidfile=self.workdir / "haproxy.pid"))
        check = subprocess.run([binary, "-c", "-q", "-f", str(config)], capture_output=True, text=True)
        if check.returncode != 0:
            raise LabError(f"haproxy config invalid:\n{check.stdout}{check.stderr}")
        self.haproxy_socket.unlink(missing_ok=True)
        logfile = (self.workdir / "haproxy.log").open("ab")
        self._haproxy = subprocess.Popen([binary, "-db", "-f", str(config)], stdin=subprocess.DEVNULL,
                                         stdout=logfile, stderr=logfile, preexec_fn=_die_with_parent)
        logfile.close()

        def answers() -> bool:
            if self._haproxy is not None and self._haproxy.poll() is not None:
                raise LabError(f"haproxy exited ({self._haproxy.returncode}); see {self.workdir / 'haproxy.log'}")
            return "Name: HAProxy" in self.haproxy_cmd("show info")
        try:
            wait_until(answers, timeout=10, what="the HAProxy runtime API")
        except LabError:
            if self._haproxy.poll() is not None:
                raise LabError(f"haproxy exited: {(self.workdir / 'haproxy.log').read_text()[-2000:]}") from None
            raise

    def _stop_haproxy(self) -> None:
        proc, self._haproxy = self._haproxy, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def haproxy_cmd(self, cmd: str, *, timeout: float = 5.0) -> str:
        """Send one runtime-API command over the unix socket; return the answer."""
        return LocalSocketApi(str(self.haproxy_socket), timeout=timeout).execute(cmd)

    def server_states(self) -> dict[str, dict[str, str]]:
        """``show servers state`` of the backend, keyed by server name (fields by their header names)."""
        return parse_servers_state(self.haproxy_cmd(f"show servers state {BACKEND}"))

    def wait_serving(self, timeout: float = 30.0) -> None:
        """Wait until every node listens on the product's ports.  A node's start or reset returns
        once its service was started (systemd, docker), before the program has bound its ports,
        and HAProxy may not have seen a reset's old process go at all (two failed checks, 0.4 s),
        so its servers being UP proves nothing: a test calling a node right after a reset found
        its port refused."""
        from zdu.run.waits import tcp_check

        for node in self._nodes:
            for port in self.product.serving_ports(node):
                target = f"{node.host}:{port}"
                wait_until(lambda target=target: tcp_check(target, 1.0).ok, timeout=timeout,
                           what=f"{node.name} to listen on port {port}")

    def wait_servers_up(self, timeout: float = 15.0) -> None:
        """Wait until HAProxy's health checks see every server UP (operational state 2)."""
        wait_until(lambda: all(s.get("srv_op_state") == "2" for s in self.server_states().values())
                   and len(self.server_states()) == len(self._nodes),
                   timeout=timeout, what="every HAProxy server UP")

    def _write_lb_script(self) -> None:
        _write(self.lb_script, f"""#!/bin/sh
# Load-balancer hook for the zdupgrade lab (zdu.lb.script calling convention):
#   lb-hook.sh ACTION NODE      with ZDU_LB_SERVER=<haproxy server> in the environment
# ACTION: disable (drain, wait until no session, then maint) | enable (ready, wait until UP) | check
#         | healthy (exit 0 when UP; else exit 1, the status on the last line)
# Without ZDU_LB_SERVER the server is NODE in lower case (Node-A -> node-a).
set -eu
action=${{1:-${{ZDU_ACTION:-}}}}
server=${{ZDU_LB_SERVER:-$(printf %s "${{2:-}}" | tr A-Z a-z)}}
sock={shlex.quote(str(self.haproxy_socket))}
backend={BACKEND}
cmd() {{ echo "$1" | socat stdio "UNIX-CONNECT:$sock"; }}
field() {{ cmd "show stat" | awk -F, -v b="$backend" -v s="$server" -v f="$1" \\
    'NR==1{{for(i=1;i<=NF;i++) if($i==f||$i=="# "f) c=i}} $1==b&&$2==s{{print $c}}'; }}
case "$action" in
  check) [ -n "$(field status)" ] || {{ echo "unknown server $backend/$server" >&2; exit 2; }} ;;
  disable)
    cmd "set server $backend/$server state drain" >/dev/null
    i=0; while [ "$(field scur)" != 0 ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
    cmd "set server $backend/$server state maint" >/dev/null ;;
  enable)
    cmd "set server $backend/$server state ready" >/dev/null
    i=0; while [ "$(field status)" != UP ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
    [ "$(field status)" = UP ] ;;
  healthy)
    now=$(field status)
    case "$now" in UP|"UP "*) ;; *) echo "$backend/$server $now"; exit 1 ;; esac ;;
  *) echo "usage: $0 disable|enable|check|healthy SERVER" >&2; exit 2 ;;
esac
""", 0o755)

    # ------------------------------------------------------------------ topology

    def write_topology(self, path: str | Path, *, lb: LbKind = "none",
                       extra: Mapping[str, Any] | None = None,
                       node_fields: Mapping[str, Mapping[str, Any]] | None = None) -> Path:
        """Write a topology YAML for this lab (the shape ``zdu.topology`` reads); return its path.

        ``lb``: ``none``, ``haproxy`` (runtime API socket) or ``script`` (:attr:`lb_script`, ``path:``).
        ``extra`` is merged into the document (nested mappings merge key by key);
        ``node_fields`` into the entry of each node it names (``{"Node-A": {"group": "manager"}}``;
        a value of None removes the field).
        """
        if lb == "haproxy":
            balancer: dict[str, Any] = {"type": "haproxy", "socket": str(self.haproxy_socket), "backend": BACKEND}
        elif lb == "script":
            balancer = {"type": "script", "path": str(self.lb_script), "timeout": 60}
        elif lb == "none":
            balancer = {"type": "none"}
        else:
            raise ValueError(f"unknown lb kind {lb!r}")
        doc: dict[str, Any] = {
            "profile": self.product.profile,
            "ssh": {"user": "root", "key_file": str(self.key_file), "known_hosts": str(self.known_hosts),
                    "host_key_policy": "strict", "connect_timeout": 5, "command_timeout": 120},
            "load_balancer": balancer,
            "nodes": [{"name": n.name, "host": n.host, "port": n.ssh_port, "group": "Gateway",
                       "roles": ["gateway"], "lb_server": n.lb_server,
                       **({"vars": self.product.node_vars(self, n)} if self.product.node_vars(self, n) else {})}
                      for n in self._nodes],
        }
        if self.product.topology_vars(self):
            doc["vars"] = self.product.topology_vars(self)
        for name, fields in (node_fields or {}).items():
            entry = next(n for n in doc["nodes"] if n["name"] == self.node(name).name)
            _merge(entry, fields)
            for key in [k for k, v in fields.items() if v is None]:
                del entry[key]
        _merge(doc, dict(extra or {}))
        text = yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=200)
        return _write(Path(path).resolve(), text)


IP = shutil.which("ip") or "/usr/sbin/ip"
SYSCTL = shutil.which("sysctl") or "/usr/sbin/sysctl"


def _run(argv: list[str] | tuple[str, ...], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run([IP, *args], check=check)


def _sysctl(setting: str) -> None:
    _run([SYSCTL, "-qw", setting])


def _bastion_links(container_name: str) -> tuple[str, str]:
    """Names of the bastion's veth pair (here, there): short (IFNAMSIZ) and unique per lab."""
    tag = hashlib.sha256(container_name.encode()).hexdigest()[:8]
    return f"zb{tag}h", f"zb{tag}b"


def _known_host(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def _die_with_parent() -> None:
    """In the HAProxy child: get SIGTERM when the lab process dies, even by SIGKILL."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
    except OSError:
        pass


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def _owner_alive(labels: Mapping[str, str]) -> int | None:
    """The pid of the live process that started a lab container, or None."""
    try:
        pid = int(labels.get(OWNER_LABEL, ""))
    except ValueError:
        return None
    if pid == os.getpid():
        return pid if labels.get(ID_LABEL) in _ACTIVE_LABS else None
    try:
        os.kill(pid, 0)
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None
    return pid if state != "Z" else None


PRODUCT_OFFSETS = {"gateway": 0, "tarball": 1, "docker": 2, "compose": 3, "webmethods": 4}
"""A product lab's place inside its slot, so that it can run beside the slot's gateway lab."""


def placement_from_env(environ: Mapping[str, str] | None = None, *, product: str = "gateway") -> dict[str, Any]:
    """Lab keyword arguments from ``ZDU_LAB_SLOT=N``: slot N >= 1 moves the lab to other loopback
    addresses (127.0.0.(11+20N)...), ports and container names, so that labs of several test
    sessions (or a test of ``zdupgrade --lab``) can run on one machine.  Slot 0 / unset: defaults.

    ``product`` (see :data:`PRODUCT_OFFSETS`) also moves a product lab within the slot (4
    addresses, one port up and one down per product) and gives it ``product=``.
    """
    slot = int((os.environ if environ is None else environ).get("ZDU_LAB_SLOT", "0") or 0)
    if not 0 <= slot <= 11:
        raise ValueError(f"ZDU_LAB_SLOT must be 0..11, got {slot}")
    if product not in PRODUCT_OFFSETS:
        raise ValueError(f"unknown lab product {product!r}")
    k = PRODUCT_OFFSETS[product]
    placement: dict[str, Any] = {} if slot == 0 else {"name_prefix": f"zdu-lab{slot}"}
    if slot or k:
        placement.update({"first_host": 11 + 20 * slot + 4 * k, "haproxy_port": 18080 + 10 * slot + k,
                          "haproxy_admin_port": 19999 - 10 * slot - k})
    if k:
        placement.update({"name_prefix": f"{placement.get('name_prefix', 'zdu-lab')}-{product}", "product": product})
    return placement


EXTRA_LABS = {"steering": 5, "bastion": 6}
"""Labs of their own for one test module each (see :func:`extra_placement`), by purpose."""


def extra_placement(purpose: str, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Lab keyword arguments for a lab of ``purpose`` (:data:`EXTRA_LABS`) in ``ZDU_LAB_SLOT``'s
    slot, beside the slot's gateway and product labs: loopback addresses of their own
    (``127.0.K.(11+20N)...`` for purpose number K-4), the two ports of the slot the products
    leave free, its own container names; the bastion lab also its bastion subnet
    (``10.249.N``)."""
    if purpose not in EXTRA_LABS:
        raise ValueError(f"unknown lab purpose {purpose!r} (known: {', '.join(EXTRA_LABS)})")
    slot = int((os.environ if environ is None else environ).get("ZDU_LAB_SLOT", "0") or 0)
    if not 0 <= slot <= 11:
        raise ValueError(f"ZDU_LAB_SLOT must be 0..11, got {slot}")
    k = EXTRA_LABS[purpose]
    placement: dict[str, Any] = {
        "network": f"127.0.{k - 4}", "first_host": 11 + 20 * slot,
        "haproxy_port": 18080 + 10 * slot + k, "haproxy_admin_port": 19999 - 10 * slot - k,
        "name_prefix": f"zdu-lab{slot or ''}-{purpose}"}
    if purpose == "bastion":
        placement["bastion_subnet"] = f"10.249.{slot}"
    return placement


def remove_lab_containers(*, force: bool = False) -> int:
    """Remove lab containers (label ``zdupgrade.lab``) whose lab process is gone; return how many.

    ``force`` also removes those of labs still running.
    """
    client = docker.from_env()
    removed = 0
    for container in client.containers.list(all=True, filters={"label": LAB_LABEL}):
        if force or not _owner_alive(container.labels):
            container.remove(force=True)
            removed += 1
    return removed
