"""Golden plans of the built-in product profiles, and their commands against the vendors' runbooks.

Each folder under ``data/profile_plans/`` holds a topology for one built-in profile, the
arguments, and ``expected.txt``: the ``--dry-run`` plan (``format_plan``).  Regenerate after a
deliberate change with ``ZDU_REGEN=1`` and review the diff.

The runbook tests check the rendered commands, in order, against the commands the vendor's
documents give (``../shared/seeds/``), with the documents' placeholders filled in from the
topology.  For ``kubernetes``, ``helm`` and ``axway`` -- which no lab here can run -- this is
all the proof there is (they are marked unproven in docs/).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from zdu.config.profile import load_profile
from zdu.errors import ConfigError
from zdu.config.topology import load_topology
from zdu.planning.plan import Plan, build_plan, format_plan
from zdu.status import Phase

DATA = Path(__file__).parent / "data" / "profile_plans"


def _loads(name: str) -> bool:
    try:
        load_profile(name)
        return True
    except ConfigError:
        return False


# the webMethods profiles use the profile `http` step; until zdupgrade has it they do not load
# (strict xfail); once they do, create their expected.txt with ZDU_REGEN=1 and review it
CASES = [pytest.param(p.name, marks=pytest.mark.xfail(not _loads(p.name), strict=True, raises=ConfigError,
                                                      reason="no profile `http` step yet"))
         for p in sorted(DATA.iterdir()) if p.is_dir()]


def plan_of(case: str) -> Plan:
    folder = DATA / case
    args = json.loads((folder / "args.json").read_text())
    topology = load_topology(folder / "topology.yaml")
    return build_plan(topology, load_profile(topology.profile or case), **args)


def commands(plan: Plan, node: str, *phases: Phase, rollback: Phase | None = None) -> list[str]:
    """The node's rendered commands (runs and node-side polls) of ``phases``, or of its rollback path,
    with runs of blanks as one space (the profiles' templates leave some where a part is left out)."""
    node_plan = plan.node_plan(node)
    steps = (list(node_plan.rollback_for(rollback)) if rollback is not None
             else [s for p in phases for s in node_plan.phases[p]])
    return [" ".join(plan.mask(s.command or (s.wait.target if s.wait else "")).split()) for s in steps]


def assert_in_order(text: str, expected: list[str]) -> None:
    """Each of ``expected`` occurs in ``text``, each after the previous one."""
    at = 0
    for needle in expected:
        found = text.find(needle, at)
        assert found >= 0, f"{needle!r} not found after position {at} in:\n{text[at:at + 3000]}"
        at = found + len(needle)


@pytest.mark.parametrize("case", CASES)
def test_plan_matches_expected(case: str) -> None:
    text = format_plan(plan_of(case)).replace(str(DATA / case), "<case>")
    expected = DATA / case / "expected.txt"
    if os.environ.get("ZDU_REGEN"):
        expected.write_text(text)
    assert text == expected.read_text()


# ---------------------------------------------------------------------------- Apinizer Kubernetes

def test_kubernetes_follows_the_runbook() -> None:
    """Apinizer upgrade, "Kubernetes" tab, 2.1.1-2.1.3 and rollback 3.2/3.3 (placeholders filled)."""
    plan = plan_of("kubernetes")
    apply = " ; ".join(commands(plan, "control-plane", Phase.APPLY))
    assert_in_order(apply, [
        # 2.1.1: the Manager first, and Ready before anything else
        "kubectl set image deployment/apimanager -n apinizer-manager apimanager=apinizercloud/apimanager:2026.04.6",
        "kubectl -n apinizer-manager rollout status deployment/apimanager",
        # 2.1.2
        "kubectl set image deployment/worker -n prod worker=apinizercloud/worker:2026.04.6",
        "kubectl set image deployment/cache -n prod cache=apinizercloud/cache:2026.04.6",
        "kubectl -n prod rollout status deployment/worker", "kubectl -n prod rollout status deployment/cache",
        # 2.1.3
        "kubectl set image deployment/apiportal -n portal apiportal=apinizercloud/apiportal:2026.04.6",
        "kubectl set image deployment/integration -n integration integration=apinizercloud/integration:2026.04.6",
        "kubectl -n portal rollout status deployment/apiportal",
        "kubectl -n integration rollout status deployment/integration",
    ])
    export = " ; ".join(commands(plan, "control-plane", Phase.EXPORT))
    assert "kubectl get deployments -Ao wide" in export
    assert_in_order(export, ["-n apinizer-manager get deployment apimanager -o jsonpath="
                             "'{.metadata.annotations.deployment\\.kubernetes\\.io/revision}'",
                             "-n integration get deployment integration"])
    # rollback 3.2 then 3.3: every changed deployment back to its recorded revision, the Manager
    # first and Ready (its own step: a failed wait stops the rollback), then the others together
    undo_steps = commands(plan, "control-plane", rollback=Phase.APPLY)
    assert len(undo_steps) == 2 and "deployment/worker" not in undo_steps[0]
    assert "deployment/apimanager" not in undo_steps[1]
    undo = " ; ".join(undo_steps)
    assert_in_order(undo, [
        "kubectl -n apinizer-manager rollout undo deployment/apimanager --to-revision=\"$(cat apimanager.revision)\"",
        "kubectl -n apinizer-manager rollout status deployment/apimanager --timeout=900s",
        "kubectl -n prod rollout undo deployment/worker", "kubectl -n prod rollout undo deployment/cache",
        "kubectl -n portal rollout undo deployment/apiportal",
        "kubectl -n integration rollout undo deployment/integration --to-revision=\"$(cat integration.revision)\"",
        "kubectl -n prod rollout status deployment/worker", "kubectl -n prod rollout status deployment/cache",
        "kubectl -n portal rollout status deployment/apiportal",
        "kubectl -n integration rollout status deployment/integration",
    ])
    assert commands(plan, "control-plane", rollback=Phase.POST_APPLY) == commands(
        plan, "control-plane", rollback=Phase.APPLY)
    assert plan.lb_type == "none" and plan.waves == (("control-plane",),)


def test_kubernetes_leaves_out_a_module_without_a_deployment(tmp_path: Path) -> None:
    source = (DATA / "kubernetes" / "topology.yaml").read_text()
    trimmed = tmp_path / "topology.yaml"      # portal_deployment not set: the profile's default ""
    trimmed.write_text("".join(line for line in source.splitlines(keepends=True)
                               if not line.strip().startswith("portal_deployment:")))
    plan = build_plan(load_topology(trimmed), load_profile("kubernetes"), old_install_dir="/a",
                      new_install_dir="/b", run_id="R")
    everything = " ".join(commands(plan, "control-plane", Phase.EXPORT, Phase.PRE_APPLY, Phase.APPLY,
                                   Phase.POST_APPLY) + commands(plan, "control-plane", rollback=Phase.APPLY))
    assert "apiportal" not in everything
    assert "deployment/integration" in everything
    assert "apiportal" in " ".join(commands(plan_of("kubernetes"), "control-plane", Phase.APPLY))


# ---------------------------------------------------------------------------- Apinizer Helm

def test_helm_follows_the_runbook() -> None:
    """Apinizer upgrade, "Helm" tab, 2.1 (upgrade), 2.2 (verification), 2.4 (rollback)."""
    plan = plan_of("helm")
    apply = " ; ".join(commands(plan, "control-plane", Phase.APPLY))
    chart = "oci://registry-1.docker.io/apinizercloud"
    assert_in_order(apply, [
        f"helm upgrade apimanager {chart}/apinizer-apimanager --version 0.2.0 --reuse-values -n apinizer-manager "
        "--set image.tag=2026.04.6",
        "kubectl -n apinizer-manager rollout status deploy/apimanager",
        f"helm upgrade worker {chart}/apinizer-worker --version 0.2.0 --reuse-values -n prod --set image.tag=2026.04.6",
        "kubectl -n prod rollout status deploy/worker",
        f"helm upgrade cache {chart}/apinizer-cache --version 0.2.0 --reuse-values -n prod --set image.tag=2026.04.6",
        f"helm upgrade integration {chart}/apinizer-integration --version 0.2.0 --reuse-values -n integration",
        f"helm upgrade portal {chart}/apinizer-apiportal --version 0.2.0 --reuse-values -n portal",
    ])
    assert "image.repository" not in apply              # online: only the tag changes
    assert "helm history apimanager -n apinizer-manager --max 1" in " ".join(commands(plan, "control-plane",
                                                                                     Phase.EXPORT))
    assert "helm list -n prod --filter '^worker$'" in " ".join(commands(plan, "control-plane", Phase.POST_APPLY))
    # rollback 3.2 then 3.3: the Manager first and Ready (its own step), then the others together
    undo_steps = commands(plan, "control-plane", rollback=Phase.POST_APPLY)
    assert len(undo_steps) == 2 and "helm rollback worker" not in undo_steps[0]
    assert "apimanager" not in undo_steps[1]
    undo = " ; ".join(undo_steps)
    assert_in_order(undo, [
        "helm rollback apimanager \"$(cat apimanager.revision)\" -n apinizer-manager",
        "kubectl -n apinizer-manager rollout status deploy/apimanager --timeout=900s",
        "helm rollback worker \"$(cat worker.revision)\" -n prod", "helm rollback cache",
        "helm rollback integration", "helm rollback portal \"$(cat portal.revision)\" -n portal",
        "kubectl -n prod rollout status deploy/worker", "kubectl -n prod rollout status deploy/cache",
        "kubectl -n integration rollout status deploy/integration", "kubectl -n portal rollout status deploy/portal",
    ])
    assert undo_steps == commands(plan, "control-plane", rollback=Phase.APPLY)


# ---------------------------------------------------------------------------- Axway

def test_axway_follows_sysupgrade_and_the_reference_topology() -> None:
    """Axway API Gateway 7.7 minimal downtime upgrade: sysupgrade export / upgrade / apply on the
    reference topology (Node-A, Node-C Admin Node Managers, Node-B Node Manager; Gateway group on A
    and B, API Manager on C), Node Manager and instance stopped and started around apply."""
    plan = plan_of("axway")
    assert plan.node_names == ("Node-A", "Node-B", "Node-C")
    assert plan.waves == (("Node-A",), ("Node-B",), ("Node-C",))
    assert [n.node.group for n in plan.nodes] == ["Gateway", "Gateway", "GatewayManager"]
    old, new = "/opt/Axway-7.5.3", "/opt/Axway-7.7"
    for node, group, instance in (("Node-A", "Gateway", "Gateway1"), ("Node-B", "Gateway", "Gateway2"),
                                  ("Node-C", "GatewayManager", "APIManager")):
        steps = " ; ".join(commands(plan, node, Phase.EXPORT, Phase.UPGRADE, Phase.PRE_APPLY, Phase.APPLY,
                                    Phase.POST_APPLY))
        assert_in_order(steps, [
            f"cd {new}/apigateway/upgrade/bin && ./sysupgrade export --old_install_dir {old} "
            "--anm_host node-a.example.net --anm_port 8090 --username admin --password ******",
            f"./sysupgrade upgrade --old_install_dir {old} --cass_host cassandra.example.net --cass_port 9042",
            f"{old}/apigateway/posix/bin/startinstance -g {group} -n {instance} -k",
            f"{old}/apigateway/posix/bin/nodemanager -k",
            f"./sysupgrade apply --old_install_dir {old}",
            f"{new}/apigateway/posix/bin/nodemanager -d",
            f"{new}/apigateway/posix/bin/startinstance -g {group} -n {instance} -d",
        ])
        undo = " ; ".join(commands(plan, node, rollback=Phase.APPLY))
        assert_in_order(undo, [f"{new}/apigateway/posix/bin/startinstance -g {group} -n {instance} -k",
                               f"{new}/apigateway/posix/bin/nodemanager -k",
                               f"{old}/apigateway/posix/bin/nodemanager -d",
                               f"{old}/apigateway/posix/bin/startinstance -g {group} -n {instance} -d"])
    text = format_plan(plan)
    assert "s3cret-pw" not in text and "--password ******" in text


# ---------------------------------------------------------------------------- lab-proven ones

def test_tarball_follows_the_virtual_server_runbook() -> None:
    """Apinizer upgrade, "Virtual Server" tab, 2.1 Quick Reference (and the lab runs it for real)."""
    plan = plan_of("tarball")
    old, new = "/opt/apinizer-worker", "/opt/apinizer-worker-2026.04.6"
    steps = " ; ".join(commands(plan, "worker-1", Phase.EXPORT, Phase.UPGRADE, Phase.APPLY))
    assert_in_order(steps, [
        f"sudo -n cp {old}/conf/application.env {new}/conf/application.env",
        f"sudo -n cp {old}/conf/master.key {new}/conf/master.key",
        f"sudo -n chown -R apinizer:apinizer {new}/conf",
        f"sudo -n chmod 600 {new}/conf/application.env", f"sudo -n chmod 400 {new}/conf/master.key",
        "sudo -n systemctl stop apinizer-apiworker",
        f"sudo -n mv -T {old} {old}.bak", f"sudo -n mv -T {new} {old}",
        f"sudo -n {old}/bin/worker-install.sh",
        "sudo -n systemctl start apinizer-apiworker", "sudo -n systemctl status apinizer-apiworker",
        "journalctl -u apinizer-apiworker",
    ])
    undo = " ; ".join(commands(plan, "worker-1", rollback=Phase.APPLY))
    assert_in_order(undo, ["systemctl stop apinizer-apiworker", f"sudo -n mv -T {old}.bak {old}",
                           f"sudo -n {old}/bin/worker-install.sh", "systemctl start apinizer-apiworker"])


def test_docker_drains_as_the_runbook_requires() -> None:
    """Apinizer "Docker" tab: worker `docker stop -t 60`, integration `docker stop -t 120`, offline load."""
    plan = plan_of("docker")
    worker = " ; ".join(commands(plan, "worker-1", Phase.UPGRADE, Phase.APPLY))
    assert_in_order(worker, [
        "docker load -i /opt/apinizer-images/2026.04.6/apinizercloud-worker.2026.04.6.tar",
        "docker stop -t 60 apinizer-worker-1", "docker rm apinizer-worker-1",
        "sh /var/tmp/zdupgrade/GOLDEN/run-new.sh", "docker logs apinizer-worker-1"])
    integration = " ; ".join(commands(plan, "integration-1", Phase.APPLY))
    assert "docker stop -t 120 apinizer-integration-1" in integration
    assert "'Quartz Scheduler Prod Environment Setup started'" in integration
    assert "python3 - /var/tmp/zdupgrade/GOLDEN apinizercloud/integration:2026.04.6 docker" in \
        " ".join(commands(plan, "integration-1", Phase.EXPORT))


def test_compose_goes_group_by_group() -> None:
    """API7 DP rolling upgrade: one gateway group per wave; the tag changed in the file, then up -d."""
    plan = plan_of("compose")
    assert plan.waves == (("dp-eu-1", "dp-eu-2"), ("dp-us-1",))
    apply = " ; ".join(commands(plan, "dp-us-1", Phase.APPLY))
    assert_in_order(apply, ["sed -E -i", "api7/api7-ee-3-gateway:3.8.17", "/opt/api7-ee/docker-compose.yaml",
                            "cd /opt/api7-ee && docker compose -f docker-compose.yaml up -d api7-ee-3-gateway"])
    undo = " ; ".join(commands(plan, "dp-us-1", rollback=Phase.APPLY))
    assert_in_order(undo, ["cp -p /var/tmp/zdupgrade/GOLDEN/compose-file.orig /opt/api7-ee/docker-compose.yaml",
                           "docker compose -f docker-compose.yaml up -d api7-ee-3-gateway"])


@pytest.mark.parametrize("case", CASES)
def test_every_rendered_command_is_valid_sh(case: str) -> None:
    """Each command of the plan (every phase, every rollback path) parses in a POSIX shell (dash)."""
    import subprocess

    plan = plan_of(case)
    for node_plan in plan.nodes:
        steps = [s for p in node_plan.phases.values() for s in p] + \
                [s for p in node_plan.rollback.values() for s in p]
        for step in steps:
            if step.command:
                check = subprocess.run(["sh", "-n", "-c", step.command], capture_output=True, text=True)
                assert check.returncode == 0, (node_plan.node.name, step.name, check.stderr, step.command)


# ---------------------------------------------------------------------------- webMethods

needs_http_steps = pytest.mark.xfail(not _loads("webmethods-cluster"), strict=True, raises=ConfigError,
                                     reason="no profile `http` step yet")


@needs_http_steps
def test_webmethods_cluster_follows_004() -> None:
    """004: quiesce port (create, enable, set), quiesce for all with flush, health through the
    quiesce port until it is down, shutdown, start the fixed node; in that order, password masked."""
    text = format_plan(plan_of("webmethods-cluster"))
    base = "http://apigw-2.example.net:5555"
    assert_in_order(text, [
        f"{base}/rest/apigateway/ports", '"factoryKey": "webMethods/HTTP"', '"portAlias": "QuiescePort"',
        f"{base}/rest/apigateway/ports/enable", '"listenerKey": "HTTPListener@4444"',
        f"{base}/invoke/wm.server.quiesce/setQuiescePort",
        f"{base}/rest/apigateway/quiescemode",
        '"flush": ["license_metrics", "performance_metrics", "subscription_quota"]',
        "http://apigw-2.example.net:4444/rest/apigateway/health",
        "/opt/softwareag/profiles/IS_default/bin/shutdown.sh",
        "/opt/softwareag-fix/profiles/IS_default/bin/startup.sh",
    ])
    assert "s3cret-pw" not in text


@needs_http_steps
def test_webmethods_bluegreen_follows_001() -> None:
    """001: quiesce design time, its status, 503 probe, start the new instance, shutdown with drain."""
    text = format_plan(plan_of("webmethods-bluegreen"))
    old = "http://apigw-1.example.net:5555"
    assert_in_order(text, [
        f"{old}/rest/apigateway/quiescemode", '"block": "designtime"',
        f"{old}/rest/apigateway/quiescemode", f"{old}/rest/apigateway/apis", "503",
        "/opt/softwareag-10.15/profiles/IS_default/bin/startup.sh",
        "http://apigw-1.example.net:5556/rest/apigateway/health",
        f"{old}/rest/apigateway/shutdown", '"option": "drain"',
    ])
    assert "s3cret-pw" not in text
