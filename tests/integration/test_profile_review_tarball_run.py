"""The built-in ``tarball`` profile on the lab when ``<old_install_dir>.bak`` is left from an
earlier upgrade (the profile keeps .bak after a run): refused in EXPORT, before anything changed and
before any node left the load balancer, with a message naming it; the stale .bak is untouched."""
from __future__ import annotations

from typing import Callable

from tests.conftest import UpgradeRun, assert_fleet_settled
from tests.integration.test_profile_tarball import LIVE, NEW, sh
from zdu.lab.fleet import Lab
from zdu.status import Status

LAB_PRODUCT = "tarball"


def test_a_bak_left_by_an_earlier_upgrade_is_refused_before_any_change(
        fresh_product_lab: Lab, upgrade_cli: Callable[..., UpgradeRun]) -> None:
    lab = fresh_product_lab
    # the swap's moves need GNU mv -T on the node
    assert "coreutils" in sh(lab, "Node-B", "mv --version | head -1")
    sh(lab, "Node-B", f"cp -a {LIVE} {LIVE}.bak && echo 0.9 > {LIVE}.bak/VERSION")
    run = upgrade_cli(lab)
    assert run.status is Status.EXPORT_FAILED, run.out
    log = (run.run_dir / "Node-B.log").read_text()
    assert f"{LIVE}.bak exists (left by an earlier upgrade?)" in log and f"rm -rf {LIVE}.bak" in log
    for node in lab.nodes:
        assert "APPLY" not in run.record["nodes"][node.name]["phases"], node.name
        assert run.record["nodes"][node.name]["lb_calls"]["disable"] == 0, node.name
        assert sh(lab, node.name, f"cat {LIVE}/VERSION {NEW}/VERSION").split() == ["1.0", "2.0"]
    assert sh(lab, "Node-B", f"cat {LIVE}.bak/VERSION; ls {LIVE}.bak").split() == \
        ["0.9", "VERSION", "bin", "conf", "logs", "run"]              # untouched, nothing nested
    assert_fleet_settled(lab, run, "1.0")
