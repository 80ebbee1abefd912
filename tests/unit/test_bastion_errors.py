"""One preflight line per failed bastion (``group_bastion_errors``), read as a sentence."""
from __future__ import annotations

from zdu.errors import UnreachableError
from zdu.transport import group_bastion_errors
from zdu.transport.base import BastionError


def test_one_line_per_bastion_naming_the_nodes_behind_it() -> None:
    problem = "cannot connect to 10.0.0.2:22: connection refused (tried 3 times)"
    other = UnreachableError("gw-c", "cannot connect to 10.0.0.13:22: timed out")
    lines, rest = group_bastion_errors([("gw-a", BastionError("gw-a", "root@10.0.0.2:22", "unreachable", problem)),
                                        ("gw-c", other),
                                        ("gw-b", BastionError("gw-b", "root@10.0.0.2:22", "unreachable", problem))])
    assert lines == [f"bastion root@10.0.0.2:22: {problem}; nodes behind it: gw-a, gw-b"]
    assert rest == [("gw-c", other)]


def test_a_problem_that_ends_a_sentence_keeps_the_line_readable() -> None:
    # the host-key messages end with a full stop ("... (ssh-keygen -R HOST -f FILE)."): the
    # grouped line read "....; nodes behind it" before
    problem = ("HOST KEY CHANGED for 10.0.0.2:22: known_hosts expects A but the server offered B; if the change "
               "is expected, remove the old entry (ssh-keygen -R 10.0.0.2 -f known_hosts).")
    lines, _ = group_bastion_errors([("gw-a", BastionError("gw-a", "root@10.0.0.2:22", "host-key", problem))])
    assert lines == [f"bastion root@10.0.0.2:22: {problem[:-1]}; nodes behind it: gw-a"]
    assert ".;" not in lines[0]
