"""What an inventory says that zdupgrade does not use (an ssh option it ignores) is said: as a note
in the dry run, and as a warning in a run's record (console, run.log, journal) -- not dropped."""
from __future__ import annotations

import io
import json
from pathlib import Path

from zdu.cli.main import main
from zdu.status import Status

DIRS = ("--old_install_dir", "/opt/gateway-1.0", "--new_install_dir", "/opt/gateway-2.0")
INVENTORY = ('[gw]\na ansible_host=127.0.0.1 ansible_port=9 '
             'ansible_ssh_common_args="-o StrictHostKeyChecking=no -o ServerAliveInterval=30"\n')
IGNORED = ("hosts.ini: host a: ansible_ssh_common_args: ssh option 'StrictHostKeyChecking' is not used by "
           "zdupgrade (host keys are checked by zdupgrade's ssh.host_key_policy)")


def call(*argv: str) -> tuple[Status, str, str]:
    out, err = io.StringIO(), io.StringIO()
    return main(list(argv), out=out, err=err), out.getvalue(), err.getvalue()


def test_the_dry_run_notes_what_the_inventory_says_in_vain(tmp_path: Path) -> None:
    (tmp_path / "hosts.ini").write_text(INVENTORY)
    status, out, err = call(*DIRS, "--dry-run", "--profile", "lab-gateway", "-i", str(tmp_path / "hosts.ini"))
    assert status is Status.SUCCESS, err
    assert f"note: {tmp_path}/{IGNORED}" in out
    assert "'ServerAliveInterval' is not used by zdupgrade\n" in out


def test_a_run_records_it_as_a_warning(tmp_path: Path) -> None:
    (tmp_path / "hosts.ini").write_text(INVENTORY)
    status, out, err = call(*DIRS, "--profile", "lab-gateway", "-i", str(tmp_path / "hosts.ini"),
                            "--log_dir", str(tmp_path / "logs"))
    assert status is not Status.SUCCESS            # nothing listens on port 9: preflight stops it
    run_dir = next((tmp_path / "logs").iterdir())
    assert f"WARNING: {tmp_path}/{IGNORED}" in out
    assert IGNORED in (run_dir / "run.log").read_text()
    warned = [json.loads(line) for line in (run_dir / "journal.jsonl").read_text().splitlines()]
    assert any(e["type"] == "Warned" and IGNORED in e["message"] for e in warned)
