"""What a lab fleet runs on its nodes: the sample gateway, or a stand-in for a product's install.

``Lab(product=NAME)`` picks one (see :data:`PRODUCTS`):

* ``gateway`` -- the sample gateway 1.0 and 2.0 side by side (``lab-gateway`` profile).
* ``tarball`` -- an Apinizer-like module installed from a tarball as a systemd unit
  (``apinizer-worker``, ``/opt/apinizer-worker``), with 2.0 extracted next to it (``tarball``
  profile; Apinizer "Virtual Server" runbook).
* ``docker`` -- the module as a container of the host's Docker engine driven from the node
  (``docker`` profile; Apinizer / webMethods Docker runbooks).  2.0 is shipped as a ``docker
  save`` tar and is not in the engine until the profile loads it.
* ``compose`` -- an API7-like data-plane gateway in a docker-compose project on every node
  (``compose`` profile; API7 DP rolling upgrade).
* ``webmethods`` -- the webMethods API Gateway stand-in (``zdu/lab/webmethods/apigateway.py``)
  1.0 running, 2.0 installed beside it (``webmethods-cluster`` / ``webmethods-bluegreen``).

Every product serves ``GET /`` -> ``{"version": ...}`` and ``/health`` on the node's service
port, so HAProxy, :meth:`Lab.served_version` and the traffic probe work unchanged, and honours
the lab's fault words in ``/etc/gateway/faults`` for version 2.0 (``start``, ``health``,
``hang-health``).  A node's product state is made by ``/lab/product/product.sh boot`` (from
``zdu-node-init.service``, idempotent) and put back by ``product.sh reset`` (from
``zdu-node-reset``).

Containers of the docker and compose products are siblings of the node containers on the host's
engine (the node drives it through the bind-mounted socket), so paths they bind-mount are host
paths: a node's ``/etc/gateway`` is the host directory ``<workdir>/nodes/<node>/etc-gateway``,
mounted at the same place into the product's containers.  They carry the lab's labels and the
node container's name as a prefix, and the lab removes them on close and reset.  Being siblings,
they outlive a crashed node (:meth:`Lab.kill`); the node's boot leaves a running one alone.
"""
from __future__ import annotations

import io
import json
import os
import shlex
import subprocess
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zdu.lab.image import GATEWAY_DIR, ensure_app_image

if TYPE_CHECKING:
    from zdu.lab.fleet import Lab, LabNode

DOCKER_SOCKET = "/var/run/docker.sock"


class Product:
    """The sample gateway (the default product); the base of the others."""

    name = "gateway"
    profile = "lab-gateway"
    old_install_dir = "/opt/gateway-1.0"
    new_install_dir = "/opt/gateway-2.0"
    start_gateway = True        # gateway@1.0 starts at boot
    uses_docker = False         # the node gets the host's docker socket and a shared /etc/gateway

    def prepare(self, lab: "Lab") -> None:
        """Host side, before the nodes start: build what the nodes need, write their product files."""

    def reset(self, lab: "Lab") -> None:
        """Host side, after every node ran its own reset."""

    def serving_ports(self, node: "LabNode") -> tuple[int, ...]:
        """The ports ``node`` listens on once its old version runs (the lab waits for them after
        a start and a reset)."""
        return (node.service_port,)

    def close(self, lab: "Lab") -> None:
        """Host side, when the lab is removed."""

    def running_versions(self, lab: "Lab", node: "LabNode") -> list[str]:
        """The versions with a live server process on ``node``."""
        _code, out = lab.exec(node.name, "for v in 1.0 2.0; do "
                                         "/opt/gateway-$v/bin/gateway status >/dev/null && echo $v; done; true")
        return _lines(out)

    def topology_vars(self, lab: "Lab") -> dict[str, Any]:
        """Template variables the lab's topology gives the profile."""
        return {}

    def node_vars(self, lab: "Lab", node: "LabNode") -> dict[str, Any]:
        """Template variables of one node."""
        return {}

    def _write_script(self, lab: "Lab", body: str) -> None:
        for node in lab.nodes:
            target = lab.workdir / "nodes" / node.name / "product" / "product.sh"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(body)
            target.chmod(0o755)


# ---------------------------------------------------------------------------- tarball

MODULE = "worker"
SERVICE = "apinizer-worker"
LIVE_DIR = "/opt/apinizer-worker"

INSTALL_SH = f"""#!/bin/sh
# Re-registers the {SERVICE} systemd unit for the installation this script belongs to
# (like Apinizer's bin/<module>-install.sh): after an install-dir swap it points at the new files.
set -eu
dir=$(cd "$(dirname "$0")/.." && pwd -P)
chown -R apinizer:apinizer "$dir/logs" "$dir/run"
cat > /etc/systemd/system/{SERVICE}.service <<EOF
[Unit]
Description=Apinizer {MODULE} $(cat "$dir/VERSION") (zdupgrade lab sample)
After=network.target

[Service]
User=apinizer
Group=apinizer
WorkingDirectory=$dir
Environment=ZDU_APP_MODULE={MODULE}
ExecStart=$dir/bin/{MODULE} serve
# SIGTERM, then the worker drains its in-flight requests
TimeoutStopSec=60
Restart=no

[Install]
WantedBy=multi-user.target
EOF
systemctl daemon-reload
systemctl enable --quiet {SERVICE}.service
echo "registered {SERVICE}.service for $dir"
"""

TARBALL_PRODUCT_SH = f"""#!/bin/sh
# The lab's {SERVICE} install (tarball + systemd unit): boot | reset
set -eu
. /etc/zdu-node.env
live={LIVE_DIR}
install_old() {{
    tar -xzf /lab/product/{SERVICE}-1.0-linux-x64.tar.gz -C /opt
    mv /opt/{SERVICE}-1.0 "$live"
    printf 'SERVER_HOST=%s\\nSERVER_PORT=%s\\nAPINIZER_ENV=prod\\n' "$ZDU_NODE_IP" "$ZDU_SERVICE_PORT" \\
        > "$live/conf/application.env"
    od -An -tx1 -N32 /dev/urandom | tr -d ' \\n' > "$live/conf/master.key"
    chown -R apinizer:apinizer "$live/conf"
    chmod 600 "$live/conf/application.env"
    chmod 400 "$live/conf/master.key"
    "$live/bin/{MODULE}-install.sh" >/dev/null
    # the new release, extracted next to the live one (the runbook's 'tar -xzf ... -C /opt')
    tar -xzf /lab/product/{SERVICE}-2.0-linux-x64.tar.gz -C /opt
}}
id -u apinizer >/dev/null 2>&1 || useradd --system --user-group --no-create-home --shell /usr/sbin/nologin apinizer
case "$1" in
boot)
    [ -d "$live" ] || install_old
    systemctl --no-block start {SERVICE}.service ;;
reset)
    systemctl stop {SERVICE}.service 2>/dev/null || true
    pkill -KILL -f '/opt/{SERVICE}[^ ]*/bin/{MODULE[:-1]}[{MODULE[-1]}] serve' || true
    rm -rf "$live" "$live.bak" "$live.failed" /opt/{SERVICE}-2.0 \\
        /etc/systemd/system/{SERVICE}.service /etc/systemd/system/multi-user.target.wants/{SERVICE}.service
    systemctl daemon-reload
    install_old
    systemctl start {SERVICE}.service ;;
esac
"""


def module_tarball(version: str) -> bytes:
    """``apinizer-worker-VERSION-linux-x64.tar.gz``: ``apinizer-worker-VERSION/`` with ``bin/worker``
    (the lab gateway program, module mode), ``bin/worker-install.sh``, ``VERSION`` and empty
    ``conf/``, ``logs/``, ``run/`` (conf/application.env and conf/master.key are the install's own)."""
    top = f"{SERVICE}-{version}"
    entries: list[tuple[str, bytes | None, int]] = [
        (top, None, 0o755), (f"{top}/bin", None, 0o755), (f"{top}/conf", None, 0o755),
        (f"{top}/logs", None, 0o755), (f"{top}/run", None, 0o755),
        (f"{top}/bin/{MODULE}", (GATEWAY_DIR / "gateway.py").read_bytes(), 0o755),
        (f"{top}/bin/{MODULE}-install.sh", INSTALL_SH.encode(), 0o755),
        (f"{top}/VERSION", f"{version}\n".encode(), 0o644),
        (f"{top}/conf/README", b"application.env and master.key are carried over from the running install\n", 0o644),
    ]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data, mode in entries:
            info = tarfile.TarInfo(name)
            info.mode, info.mtime = mode, 1_700_000_000
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class TarballProduct(Product):
    """``apinizer-worker`` installed from a tarball, run by systemd as user ``apinizer``."""

    name = "tarball"
    profile = "tarball"
    old_install_dir = LIVE_DIR
    new_install_dir = f"/opt/{SERVICE}-2.0"
    start_gateway = False

    def prepare(self, lab: "Lab") -> None:
        self._write_script(lab, TARBALL_PRODUCT_SH)
        for version in ("1.0", "2.0"):
            data = module_tarball(version)
            for node in lab.nodes:
                (lab.workdir / "nodes" / node.name / "product" / f"{SERVICE}-{version}-linux-x64.tar.gz").write_bytes(data)

    def running_versions(self, lab: "Lab", node: "LabNode") -> list[str]:
        # a server process's cwd follows its install dir through renames (see WorkingDirectory)
        _code, out = lab.exec(node.name, f"for p in $(pgrep -f '/bin/{MODULE[:-1]}[{MODULE[-1]}] serve'); do "
                                         "cat \"$(readlink /proc/$p/cwd)/VERSION\" 2>/dev/null; done; true")
        return sorted(set(_lines(out)))

    def topology_vars(self, lab: "Lab") -> dict[str, Any]:
        return {"service": SERVICE, "install_script": f"bin/{MODULE}-install.sh", "sudo": ""}

    def node_vars(self, lab: "Lab", node: "LabNode") -> dict[str, Any]:
        return {"health_url": f"http://{node.host}:{node.service_port}/server-status"}


# ---------------------------------------------------------------------------- docker, compose

class _ContainerProduct(Product):
    """Shared by the products whose module runs in containers of the host's engine."""

    start_gateway = False
    uses_docker = True
    module = MODULE
    app_name = "ApinizerWorkerApp"
    repository = "apinizer-worker"

    def image(self, lab: "Lab", version: str) -> str:
        """This lab's tag of the module image, e.g. ``zdu-lab4/apinizer-worker:2.0``."""
        return f"{lab.name_prefix}/{self.repository}:{version}"

    def image_tar(self, version: str) -> str:
        return f"{self.repository}-{version}.tar"

    def release_dir(self, version: str) -> str:
        """Where a release's image tar is on the nodes (the runbooks' scp target directory)."""
        return f"/opt/zdu-images/{self.repository}-{version}"

    @property
    def old_install_dir(self) -> str:  # type: ignore[override]
        return self.release_dir("1.0")

    @property
    def new_install_dir(self) -> str:  # type: ignore[override]
        return self.release_dir("2.0")

    def prepare(self, lab: "Lab") -> None:
        built = {v: ensure_app_image(self.module, v, self.app_name) for v in ("1.0", "2.0")}
        for version, tag in built.items():
            _docker("tag", tag, self.image(lab, version))
        first = lab.workdir / "nodes" / lab.nodes[0].name / "product" / self.image_tar("2.0")
        first.parent.mkdir(parents=True, exist_ok=True)
        _docker("save", "-o", str(first), self.image(lab, "2.0"))
        for node in lab.nodes[1:]:
            target = lab.workdir / "nodes" / node.name / "product" / self.image_tar("2.0")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.unlink(missing_ok=True)
            os.link(first, target)
        self._untag_new(lab)

    def _untag_new(self, lab: "Lab") -> None:
        """The new tag is only in the engine once a node loaded it (the image stays under the lab's own tag)."""
        subprocess.run(["docker", "rmi", self.image(lab, "2.0")], capture_output=True, check=False)

    def reset(self, lab: "Lab") -> None:
        self._untag_new(lab)

    def close(self, lab: "Lab") -> None:
        for version in ("1.0", "2.0"):
            subprocess.run(["docker", "rmi", self.image(lab, version)], capture_output=True, check=False)

    def running_versions(self, lab: "Lab", node: "LabNode") -> list[str]:
        out = subprocess.run(["docker", "ps", "--filter", f"name=^{node.container_name}-", "--format",
                              "{{.Image}}"], capture_output=True, text=True, check=False).stdout
        return sorted({line.rsplit(":", 1)[-1] for line in _lines(out)})

    def lab_labels(self, lab: "Lab") -> dict[str, str]:
        return lab.container_labels()

    def node_setup_lines(self, lab: "Lab", node: "LabNode") -> str:
        """Shell lines (node side) that put the release tar where the runbook's scp would."""
        return (f"mkdir -p {self.release_dir('1.0')} {self.release_dir('2.0')}\n"
                f"ln -sf /lab/product/{self.image_tar('2.0')} {self.release_dir('2.0')}/{self.image_tar('2.0')}\n")


#: the module container's database URI, password and all (as Apinizer's containers are given it):
#: the profile must not write it into any log
DOCKER_DB_URI = "mongodb://apinizer:lab-Mongo-s3cret@mongo.invalid:27017/apinizer?authSource=admin"
#: a label and a log option whose values are credentials (a reverse proxy's basic-auth users, a log
#: driver's token), which the profile must not write into any log either
DOCKER_AUTH_LABEL = ("traefik.http.middlewares.lab-auth.basicauth.users", "admin:$apr1$lab-Label-s3cret")
DOCKER_LOG_TAG = "lab-LogOpt-s3cret"


class DockerProduct(_ContainerProduct):
    """``apinizer-worker`` as a container started with ``docker run`` (the runbook's vanilla docker)."""

    name = "docker"
    profile = "docker"

    def container(self, node: "LabNode") -> str:
        return f"{node.container_name}-{self.module}"

    def run_argv(self, lab: "Lab", node: "LabNode") -> list[str]:
        """How an operator started the 1.0 container (what the profile must carry over)."""
        labels = [a for k, v in {**self.lab_labels(lab), DOCKER_AUTH_LABEL[0]: DOCKER_AUTH_LABEL[1]}.items()
                  for a in ("--label", f"{k}={v}")]
        return ["docker", "run", "-d", "--name", self.container(node), "--network", "host",
                "--restart", "unless-stopped", *labels,
                "-e", f"SERVER_HOST={node.host}", "-e", f"SERVER_PORT={node.service_port}",
                "-e", f"ZDU_NODE_NAME={node.name}", "-e", f"SPRING_DATA_MONGODB_URI={DOCKER_DB_URI}",
                "-e", "JAVA_OPTS=-Xms256m -Xmx512m -Dspring.profiles.active=prod -Dlog.file='$HOME/x y.log'",
                "-v", f"{lab.etc_gateway_dir(node)}:/etc/gateway:ro",
                "--log-opt", "max-size=10m", "--log-opt", f"tag={DOCKER_LOG_TAG}", "--stop-timeout", "60",
                self.image(lab, "1.0")]

    def prepare(self, lab: "Lab") -> None:
        super().prepare(lab)
        for node in lab.nodes:
            run = shlex.join(self.run_argv(lab, node))
            name = shlex.quote(self.container(node))
            body = f"""#!/bin/sh
# The lab's {self.module} container on this node (driven through the host's engine): boot | reset
set -eu
{self.node_setup_lines(lab, node)}case "$1" in
boot) docker container inspect {name} >/dev/null 2>&1 || {run} >/dev/null ;;
reset) docker rm -f {name} >/dev/null 2>&1 || true; {run} >/dev/null ;;
esac
"""
            target = lab.workdir / "nodes" / node.name / "product" / "product.sh"
            target.write_text(body)
            target.chmod(0o755)

    def topology_vars(self, lab: "Lab") -> dict[str, Any]:
        return {"image": f"{lab.name_prefix}/{self.repository}", "new_version": "2.0",
                "image_tar": self.image_tar("2.0"), "drain": 5}

    def node_vars(self, lab: "Lab", node: "LabNode") -> dict[str, Any]:
        return {"container": self.container(node),
                "health_url": f"http://{node.host}:{node.service_port}/server-status"}


COMPOSE_SERVICE = "api7-ee-3-gateway"


class ComposeProduct(_ContainerProduct):
    """An API7-like data-plane gateway in a docker-compose project (``/opt/api7-dp``) per node."""

    name = "compose"
    profile = "compose"
    module = "gateway"
    app_name = "api7-ee-3-gateway"
    repository = COMPOSE_SERVICE
    compose_dir = "/opt/api7-dp"

    def project(self, node: "LabNode") -> str:
        return f"{node.container_name}-api7"

    def compose_file(self, lab: "Lab", node: "LabNode") -> str:
        labels = "".join(f"      {k}: {_yaml_str(v)}\n" for k, v in self.lab_labels(lab).items())
        return f"""\
# API7 Enterprise data plane (zdupgrade lab stand-in)
version: "3.8"
services:
  {COMPOSE_SERVICE}:
    image: {self.image(lab, '1.0')}
    network_mode: host
    restart: unless-stopped
    stop_grace_period: 5s
    environment:
      SERVER_HOST: "{node.host}"
      SERVER_PORT: "{node.service_port}"
      ZDU_NODE_NAME: "{node.name}"
      API7_CONTROL_PLANE_ENDPOINTS: '["https://127.0.0.1:7943"]'
    volumes:
      - {lab.etc_gateway_dir(node)}:/etc/gateway:ro
    labels:
{labels}"""

    def prepare(self, lab: "Lab") -> None:
        super().prepare(lab)
        for node in lab.nodes:
            folder = lab.workdir / "nodes" / node.name / "product"
            (folder / "docker-compose.yml").write_text(self.compose_file(lab, node))
            (folder / "env").write_text(f"COMPOSE_PROJECT_NAME={self.project(node)}\n")
            d = self.compose_dir
            body = f"""#!/bin/sh
# The lab's API7 data-plane compose project on this node (driven through the host's engine): boot | reset
set -eu
{self.node_setup_lines(lab, node)}install_project() {{
    mkdir -p {d}
    cp /lab/product/docker-compose.yml {d}/docker-compose.yml
    cp /lab/product/env {d}/.env
}}
case "$1" in
boot)
    [ -f {d}/docker-compose.yml ] || install_project
    cd {d} && docker-compose up -d --quiet-pull >/dev/null 2>&1 ;;
reset)
    ids=$(docker ps -aq --filter label=com.docker.compose.project={shlex.quote(self.project(node))})
    [ -z "$ids" ] || docker rm -f $ids >/dev/null
    install_project
    cd {d} && docker-compose up -d >/dev/null 2>&1 ;;
esac
"""
            (folder / "product.sh").write_text(body)
            (folder / "product.sh").chmod(0o755)

    def topology_vars(self, lab: "Lab") -> dict[str, Any]:
        return {"compose_dir": self.compose_dir, "compose_file": "docker-compose.yml", "service": COMPOSE_SERVICE,
                "image": f"{lab.name_prefix}/{self.repository}", "new_version": "2.0",
                "image_tar": self.image_tar("2.0"), "compose": "docker-compose"}

    def node_vars(self, lab: "Lab", node: "LabNode") -> dict[str, Any]:
        return {"health_url": f"http://{node.host}:{node.service_port}/health"}


# ---------------------------------------------------------------------------- webMethods

WM_PASSWORD = "manage-lab"      # the lab's Administrator password (a profile secret)
WM_UNIT = """[Unit]
Description=webMethods API Gateway %i (zdupgrade lab stand-in, /opt/softwareag-%i)
After=network.target

[Service]
ExecStart=/opt/softwareag-%i/bin/apigateway serve
TimeoutStopSec=60
Restart=no
"""


class WebMethodsProduct(Product):
    """webMethods API Gateway stand-in (``zdu/lab/webmethods``): 1.0 running as
    ``webmethods-apigateway@1.0`` from ``/opt/softwareag-1.0`` (primary port 5555), 2.0 installed
    in ``/opt/softwareag-2.0`` (primary port 5556); both serve the node's runtime port."""

    name = "webmethods"
    profile = "webmethods-cluster"
    old_install_dir = "/opt/softwareag-1.0"
    new_install_dir = "/opt/softwareag-2.0"
    start_gateway = False
    primary_ports = {"1.0": 5555, "2.0": 5556}
    quiesce_port = 4444

    def prepare(self, lab: "Lab") -> None:
        program = (Path(__file__).resolve().parent / "webmethods" / "apigateway.py").read_text()
        for node in lab.nodes:
            folder = lab.workdir / "nodes" / node.name / "product"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "apigateway.py").write_text(program)
            (folder / "webmethods-apigateway@.service").write_text(WM_UNIT)
            installs = "".join(self._install_lines(node, v) for v in ("1.0", "2.0"))
            (folder / "product.sh").write_text(f"""#!/bin/sh
# The lab's webMethods API Gateway stand-in on this node: boot | reset
set -eu
install_all() {{
    cp /lab/product/webmethods-apigateway@.service /etc/systemd/system/
    systemctl daemon-reload
{installs}}}
case "$1" in
boot)
    [ -d /opt/softwareag-1.0 ] || install_all
    systemctl --no-block start webmethods-apigateway@1.0.service ;;
reset)
    # killed, not stopped: a stop drains the instance (up to 30 s for requests in flight), which a
    # reset must not wait for
    units="webmethods-apigateway@2.0.service webmethods-apigateway@1.0.service"
    systemctl kill --signal=KILL $units 2>/dev/null || true
    systemctl stop $units 2>/dev/null || true
    systemctl reset-failed $units 2>/dev/null || true
    rm -rf /opt/softwareag-1.0 /opt/softwareag-2.0
    install_all
    systemctl start webmethods-apigateway@1.0.service ;;
esac
""")
            (folder / "product.sh").chmod(0o755)

    def _install_lines(self, node: "LabNode", version: str) -> str:
        d = f"/opt/softwareag-{version}"
        config = json.dumps({"host": node.host, "primary_port": self.primary_ports[version],
                             "runtime_port": node.service_port, "password": WM_PASSWORD})
        return (f"    mkdir -p {d}/bin {d}/config {d}/logs {d}/profiles/IS_default/bin\n"
                f"    install -m 755 /lab/product/apigateway.py {d}/bin/apigateway\n"
                f"    echo {version} > {d}/VERSION\n"
                f"    echo {shlex.quote(config)} > {d}/config/gateway.json; chmod 600 {d}/config/gateway.json\n"
                f"    printf '#!/bin/sh\\nexec systemctl start webmethods-apigateway@{version}.service\\n' "
                f"> {d}/profiles/IS_default/bin/startup.sh\n"
                f"    printf '#!/bin/sh\\nexec systemctl stop webmethods-apigateway@{version}.service\\n' "
                f"> {d}/profiles/IS_default/bin/shutdown.sh\n"
                f"    chmod 755 {d}/profiles/IS_default/bin/startup.sh {d}/profiles/IS_default/bin/shutdown.sh\n")

    def serving_ports(self, node: "LabNode") -> tuple[int, ...]:
        return (self.primary_ports["1.0"], node.service_port)

    def running_versions(self, lab: "Lab", node: "LabNode") -> list[str]:
        _code, out = lab.exec(node.name, "for v in 1.0 2.0; do systemctl is-active --quiet "
                                         "webmethods-apigateway@$v.service && echo $v; done; true")
        return _lines(out)

    def topology_vars(self, lab: "Lab") -> dict[str, Any]:
        return {"admin_port_old": self.primary_ports["1.0"], "admin_port_new": self.primary_ports["2.0"],
                "quiesce_port": self.quiesce_port, "admin_password": WM_PASSWORD}

    def node_vars(self, lab: "Lab", node: "LabNode") -> dict[str, Any]:
        return {}


PRODUCTS: dict[str, type[Product]] = {p.name: p for p in (Product, TarballProduct, DockerProduct, ComposeProduct,
                                                          WebMethodsProduct)}


def make_product(name: str) -> Product:
    """The product called ``name`` (see :data:`PRODUCTS`)."""
    try:
        return PRODUCTS[name]()
    except KeyError:
        raise ValueError(f"unknown lab product {name!r} (known: {', '.join(PRODUCTS)})") from None


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _yaml_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _docker(*args: str) -> str:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:2])} failed: {proc.stderr.strip()}")
    return proc.stdout
