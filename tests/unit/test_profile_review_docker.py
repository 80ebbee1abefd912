"""``docker``: the EXPORT step that writes ``run-new.sh`` / ``run-old.sh`` from ``docker container
inspect`` prints each ``docker run`` line for the log with the values of the environment, the
labels and the log options masked (they hold passwords, basic-auth users, log driver tokens), while
the scripts themselves keep every value.  The step's rendered command runs here in a real shell
on an inspect document; the lab run: tests/integration/test_profile_review_docker_opts_run.py."""
from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

from tests.unit.test_profile_plans import plan_of
from zdu.status import Phase

SECRETS = ("db-s3cret", "lbl-s3cret", "splunk-s3cret-token")


def write_scripts(work: Path) -> str:
    container = {
        "Name": "/apinizer-worker-1",
        "Config": {"Image": "apinizercloud/worker:2025.11.0", "Env": ["PATH=/usr/bin", "DB_URI=mongodb://u:db-s3cret@db/x"],
                   "Labels": {"img": "same", "traefik.http.middlewares.a.basicauth.users": "admin:lbl-s3cret"},
                   "Cmd": None, "Entrypoint": None},
        "HostConfig": {"NetworkMode": "host", "RestartPolicy": {"Name": "unless-stopped"},
                       "LogConfig": {"Type": "splunk", "Config": {"splunk-token": "splunk-s3cret-token",
                                                                  "splunk-url": "https://splunk.example.net:8088"}}},
    }
    image = {"Config": {"Env": ["PATH=/usr/bin"], "Labels": {"img": "same"}, "Cmd": ["java"], "Entrypoint": None}}
    (work / "container.json").write_text(json.dumps([container]))
    (work / "old-image.json").write_text(json.dumps([image]))
    [step] = [s for s in plan_of("docker").node_plan("worker-1").phases[Phase.EXPORT] if s.name.startswith("write docker run")]
    assert step.command is not None and "/var/tmp/zdupgrade/GOLDEN " in step.command
    command = step.command.replace("/var/tmp/zdupgrade/GOLDEN ", shlex.quote(str(work)) + " ", 1)
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_logged_run_lines_mask_env_label_and_log_option_values(tmp_path: Path) -> None:
    out = write_scripts(tmp_path)
    for secret in SECRETS:
        assert secret not in out, out
    assert "-e 'DB_URI=***'" in out
    assert "--label 'traefik.http.middlewares.a.basicauth.users=***'" in out
    assert "--log-driver splunk" in out and "--log-opt 'splunk-token=***'" in out
    assert "--log-opt 'splunk-url=***'" in out
    assert "--label img" not in out                          # as the image has it: not carried


def test_the_scripts_keep_every_value(tmp_path: Path) -> None:
    write_scripts(tmp_path)
    new = shlex.split((tmp_path / "run-new.sh").read_text().splitlines()[-1])
    assert new[:2] == ["exec", "docker"] and new[-1] == "apinizercloud/worker:2026.04.6"
    assert "DB_URI=mongodb://u:db-s3cret@db/x" in new
    assert "traefik.http.middlewares.a.basicauth.users=admin:lbl-s3cret" in new
    assert "splunk-token=splunk-s3cret-token" in new and "splunk-url=https://splunk.example.net:8088" in new
    old = (tmp_path / "run-old.sh").read_text()
    assert "apinizercloud/worker:2025.11.0" in old and "splunk-token=splunk-s3cret-token" in old
