"""Health gates: poll a condition until it holds or its deadline passes.

Replaces the fixed sleeps of the Axway scripts (10 s after a stop, 30 s after a
start): a gate returns as soon as the condition holds, and says how long it
took.  Clock and sleep are injectable so tests never sleep.
"""
from __future__ import annotations

import dataclasses
import re
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Callable

from zdu.model import CommandResult
from zdu.planning.plan import PlannedRequest, PlannedWait

RunOnNode = Callable[[str, float], CommandResult]


@dataclass(frozen=True)
class WaitOutcome:
    """How a gate ended."""

    ok: bool
    polls: int
    waited: float
    message: str               # on success what held; on failure why the last check failed
    interrupted: bool = False  # ``stop()`` ended it before the deadline


@dataclass(frozen=True)
class Check:
    ok: bool
    message: str


#: proxies from the environment are not used for health checks (a gate must see the node itself)
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_check(url: str, status: int | None, pattern: str | None, timeout: float) -> Check:
    """One HTTP GET from the control machine.  Never raises: whatever goes wrong (refused,
    timeout, a port that does not speak HTTP, a malformed URL) is a failed check saying why."""
    try:
        with _OPENER.open(url, timeout=timeout) as response:  # noqa: S310 (URL from the profile)
            code, body = response.status, response.read(1 << 20).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        try:
            body = exc.read(1 << 20).decode("utf-8", "replace") if exc.fp else ""
        except Exception:  # noqa: BLE001 - the status is what counts
            body = ""
        code = exc.code
    except urllib.error.URLError as exc:
        return Check(False, f"GET {url}: {_reason(exc.reason)}")
    except Exception as exc:  # noqa: BLE001 - BadStatusLine, InvalidURL, reset, UnicodeError ...
        return Check(False, f"GET {url}: {_reason(exc)}")
    return _judge_http(url, code, body, status, pattern)


def _reason(exc: object) -> str:
    if isinstance(exc, BaseException):
        text = str(exc).strip()
        name = type(exc).__name__
        return f"{name}: {text[:200]}" if text else name
    return str(exc)[:200]


def _judge_http(url: str, code: int, body: str, status: int | None, pattern: str | None) -> Check:
    if status is not None and code != status:
        return Check(False, f"GET {url}: status {code}, expected {status}")
    if pattern and not re.search(pattern, body):
        return Check(False, f"GET {url}: status {code}, body does not match /{pattern}/: {body[:120]!r}")
    return Check(True, f"GET {url}: status {code}")


def request_check(request: PlannedRequest, timeout: float) -> Check:
    """One poll of an http wait that has request options (method, headers, auth, TLS)."""
    from .http import http_request, judge_response
    answer = http_request(dataclasses.replace(request, timeout=min(request.timeout, timeout)))
    if answer.error:
        return Check(False, f"{request.method} {request.url}: {answer.error}")
    problem = judge_response(request, answer.status, answer.body)
    return Check(problem is None, problem or f"{request.method} {request.url}: status {answer.status}")


def tcp_check(target: str, timeout: float) -> Check:
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return Check(True, f"{target} accepts connections")
    except Exception as exc:  # noqa: BLE001 - refused, unreachable, bad port: a failed check
        return Check(False, f"{target}: {_reason(exc)}")


def node_check(wait: PlannedWait, result: CommandResult) -> Check:
    """Judge one node-side poll command's result."""
    if result.error == "timeout":
        return Check(False, "the check command timed out")
    if wait.kind == "http":
        body, _, code = result.stdout.rpartition("\n")
        if result.exit_code != 0 or not code.strip().isdigit():
            return Check(False, f"GET {wait.target}: {result.stderr.strip() or 'no answer'}")
        return _judge_http("(from node)", int(code), body, wait.status, wait.pattern)
    if result.exit_code == 0:
        return Check(True, {"process": f"process {wait.state}", "log": "log line found",
                            "tcp": "port open", "command": "exit 0"}.get(wait.kind, "ok"))
    detail = (result.stderr or result.stdout).strip().splitlines()
    return Check(False, f"exit {result.exit_code}" + (f": {detail[-1][:200]}" if detail else ""))


def run_wait(wait: PlannedWait, *, run_on_node: RunOnNode, clock: Callable[[], float] = time.monotonic,
             sleep: Callable[[float], None] = time.sleep,
             stop: Callable[[], bool] = lambda: False) -> WaitOutcome:
    """Poll ``wait`` until it holds, its deadline passes, or ``stop()`` says so.

    Transport errors from ``run_on_node`` propagate: an unreachable node is not a
    failed health check, and the conductor classifies it as such.
    """
    start = clock()
    polls = 0
    while True:
        remaining = wait.deadline - (clock() - start)
        per_check = max(0.5, min(5.0, remaining))
        polls += 1
        if wait.where == "control" and wait.request is not None:
            check = request_check(wait.request, per_check)
        elif wait.where == "control":
            check = (http_check(wait.target, wait.status, wait.pattern, per_check) if wait.kind == "http"
                     else tcp_check(wait.target, per_check))
        else:
            check = node_check(wait, run_on_node(wait.target, per_check + 5))
        if wait.state == "down":  # wait until the check stops holding (a port closed, a URL gone)
            check = Check(not check.ok, f"no longer: {check.message}" if not check.ok else f"still: {check.message}")
        waited = clock() - start
        if check.ok:
            return WaitOutcome(True, polls, waited, check.message)
        stopped = stop()
        if waited >= wait.deadline or stopped:
            if wait.kill_command and not stopped:
                return _kill_and_recheck(wait, run_on_node, polls, clock, sleep, start)
            why = "interrupted" if stopped else f"not healthy after {waited:.1f}s (deadline {wait.deadline:g}s)"
            return WaitOutcome(False, polls, waited, f"{why}: {check.message}", interrupted=stopped)
        sleep(min(wait.interval, wait.deadline - waited))


def _kill_and_recheck(wait: PlannedWait, run_on_node: RunOnNode, polls: int,
                      clock: Callable[[], float], sleep: Callable[[float], None], start: float) -> WaitOutcome:
    """The deadline passed with the process still running: SIGKILL it, then check it is gone."""
    assert wait.kill_command is not None
    run_on_node(wait.kill_command, 30)
    for _ in range(25):  # a killed process is reaped within moments; bounded at ~5 s
        polls += 1
        check = node_check(wait, run_on_node(wait.target, 30))
        if check.ok:
            return WaitOutcome(True, polls, clock() - start,
                               f"still running at the {wait.deadline:g}s deadline: killed with SIGKILL")
        sleep(0.2)
    return WaitOutcome(False, polls, clock() - start,
                       f"still running after the {wait.deadline:g}s deadline and SIGKILL")
