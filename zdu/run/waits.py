"""Health gates: poll a condition until it holds or its deadline passes.

Replaces the fixed sleeps of the Axway scripts (10 s after a stop, 30 s after a
start): a gate returns as soon as the condition holds, and says how long it
took.  Clock and sleep are injectable so tests never sleep.

A node-side gate is polled *on the node*: one command (:func:`node_loop`) runs the check every
``interval`` until it holds, for at most :data:`NODE_SPAN` seconds, and returns the last check's
output and exit code; the control side judges that result exactly as it would judge a single
check (same verdict, same messages).  So a gate costs one round trip per ``NODE_SPAN`` instead
of one per poll, and an interrupt is still seen within ``NODE_SPAN``.  An http check from the
node with a body pattern is judged on the control machine (Python regular expressions): the
loop on the node stops as soon as the status is right and hands the body over.
"""
from __future__ import annotations

import dataclasses
import math
import re
import shlex
import socket
import time
import functools
import urllib.error
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from zdu.model import CommandResult
from zdu.planning.plan import PlannedRequest, PlannedWait

if TYPE_CHECKING:
    import urllib.request

RunOnNode = Callable[[str, float], CommandResult]
#: masks secrets in text (the plan's masker); a check's message quotes output masked before it is cut
Mask = Callable[[str], str]


def _same(text: str) -> str:
    return text


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


@functools.cache
def _opener() -> urllib.request.OpenerDirector:
    """The health checks' opener: proxies from the environment are not used (a gate must see
    the node itself).  Built at the first control-side http check: urllib.request (with ssl and
    http.client) is not imported at a run's start for a profile that has none."""
    import urllib.request
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_check(url: str, status: int | None, pattern: str | None, timeout: float, mask: Mask = _same) -> Check:
    """One HTTP GET from the control machine.  Never raises: whatever goes wrong (refused,
    timeout, a port that does not speak HTTP, a malformed URL) is a failed check saying why."""
    try:
        with _opener().open(url, timeout=timeout) as response:  # noqa: S310 (URL from the profile)
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
    return _judge_http(url, code, body, status, pattern, mask)


def _reason(exc: object) -> str:
    if isinstance(exc, BaseException):
        text = str(exc).strip()
        name = type(exc).__name__
        return f"{name}: {text[:200]}" if text else name
    return str(exc)[:200]


def _judge_http(url: str, code: int, body: str, status: int | None, pattern: str | None,
                mask: Mask = _same) -> Check:
    if status is not None and code != status:
        return Check(False, f"GET {url}: status {code}, expected {status}")
    if pattern and not re.search(pattern, body):
        return Check(False, f"GET {url}: status {code}, body does not match /{pattern}/: {mask(body)[:120]!r}")
    return Check(True, f"GET {url}: status {code}")


def request_check(request: PlannedRequest, timeout: float, mask: Mask = _same) -> Check:
    """One poll of an http wait that has request options (method, headers, auth, TLS)."""
    from .http import http_request, judge_response
    answer = http_request(dataclasses.replace(request, timeout=min(request.timeout, timeout)))
    if answer.error:
        return Check(False, f"{request.method} {request.url}: {answer.error}")
    problem = judge_response(request, answer.status, answer.body, mask)
    return Check(problem is None, problem or f"{request.method} {request.url}: status {answer.status}")


def tcp_check(target: str, timeout: float) -> Check:
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return Check(True, f"{target} accepts connections")
    except Exception as exc:  # noqa: BLE001 - refused, unreachable, bad port: a failed check
        return Check(False, f"{target}: {_reason(exc)}")


def node_check(wait: PlannedWait, result: CommandResult, mask: Mask = _same) -> Check:
    """Judge one node-side poll command's result."""
    if result.error == "timeout":
        return Check(False, "the check command timed out")
    if wait.kind == "http":
        body, _, code = result.stdout.rpartition("\n")
        if result.exit_code != 0 or not code.strip().isdigit():
            return Check(False, f"GET {wait.target}: {result.stderr.strip() or 'no answer'}")
        return _judge_http("(from node)", int(code), body, wait.status, wait.pattern, mask)
    if result.exit_code == 0:
        return Check(True, {"process": f"process {wait.state}", "log": "log line found",
                            "tcp": "port open", "command": "exit 0"}.get(wait.kind, "ok"))
    detail = mask(result.stderr or result.stdout).strip().splitlines()   # masked, then cut
    return Check(False, f"exit {result.exit_code}" + (f": {detail[-1][:200]}" if detail else ""))


#: a node-side gate polls on the node for at most this long per round trip (an interrupt is
#: seen within about this long)
NODE_SPAN = 2.0
#: the loop's last stderr line: how many checks it ran
_POLLS_MARK = "\n\x1ezdu-wait:"
_LOOP_HEAD = "# zdu node-side wait:"


def _verdict(wait: PlannedWait) -> tuple[str, str]:
    """Shell code setting ``zdu_ok`` (1: the check holds as far as the node can tell) and the
    test that ends the loop."""
    if wait.kind == "http":
        status = f' && [ "$zdu_c" = {wait.status} ]' if wait.status is not None else ""
        ok = ('zdu_c=$(tail -n 1 "$zdu_o" 2>/dev/null); zdu_ok=0; case $zdu_c in ""|*[!0-9]*) ;; *) '
              f'[ "$zdu_rc" -eq 0 ]{status} && zdu_ok=1 ;; esac')
    else:
        ok = 'zdu_ok=0; [ "$zdu_rc" -eq 0 ] && zdu_ok=1'
    if wait.state != "down":
        return ok, '[ "$zdu_ok" = 1 ]'          # holds (or, with a body pattern, may hold)
    if wait.kind == "http" and wait.pattern:
        return ok, ":"                          # the body decides: judged by the control side
    return ok, '[ "$zdu_ok" = 0 ]'


def node_loop(wait: PlannedWait, span: float, *, check: str | None = None,
              interval: float | None = None, max_polls: int | None = None) -> str:
    """One command polling ``check`` (default ``wait.target``) on the node every ``interval``
    seconds until it holds (as judged by :func:`node_check`, so far as the node can judge) or
    ``span`` seconds / ``max_polls`` checks have passed.  Its output and exit code are those of
    the last check; its last stderr line counts the checks (:func:`loop_result` takes it off)."""
    interval = wait.interval if interval is None else interval
    polls = max_polls if max_polls is not None else 1 + int(max(0.0, span) // max(interval, 0.01))
    ok, until = _verdict(wait)
    pause = f"{interval:.3f}".rstrip("0").rstrip(".") or "0"
    return "\n".join([
        f"{_LOOP_HEAD} polls={polls} until={'any' if until == ':' else 'ok' if '= 1' in until else 'fail'}",
        "zdu_check() (",
        check if check is not None else wait.target,
        ")",
        "zdu_o=$(mktemp 2>/dev/null) && zdu_e=$(mktemp 2>/dev/null) || { rm -f \"$zdu_o\"; zdu_o=; }",
        "trap 'rm -f ${zdu_o:+\"$zdu_o\" \"$zdu_e\"}' EXIT",
        "trap 'exit 143' TERM HUP INT",
        f"zdu_end=$(( $(date +%s) + {math.ceil(max(0.0, span)) + 1} ))",
        "zdu_n=0",
        "while :; do",
        "  zdu_n=$((zdu_n + 1))",
        '  if [ -z "$zdu_o" ]; then zdu_check </dev/null; zdu_rc=$?; break; fi',   # no mktemp: one check
        '  zdu_check >"$zdu_o" 2>"$zdu_e" </dev/null',
        "  zdu_rc=$?",
        f"  {ok}",
        f"  {until} && break",
        f'  [ "$zdu_n" -lt {polls} ] && [ "$(date +%s)" -lt "$zdu_end" ] || break',
        f"  sleep {shlex.quote(pause)} 2>/dev/null || sleep 1",
        "done",
        '[ -n "$zdu_o" ] && { cat "$zdu_o"; cat "$zdu_e" >&2; }',
        "printf '\\n\\036zdu-wait:%s\\n' \"$zdu_n\" >&2",
        'exit "$zdu_rc"',
    ])


def unwrap_node_loop(command: str) -> tuple[str, int, str] | None:
    """``(check, max polls, until)`` of a :func:`node_loop` command (``until``: ``ok``, ``fail``
    or ``any``), else None -- for test doubles that stand in for a node without running sh."""
    if not command.startswith(_LOOP_HEAD):
        return None
    head, _, rest = command.partition("\nzdu_check() (\n")
    check = rest[: rest.rindex("\n)\nzdu_o=")]
    fields = dict(f.split("=", 1) for f in head[len(_LOOP_HEAD):].split())
    return check, int(fields["polls"]), fields["until"]


def loop_result(result: CommandResult) -> tuple[CommandResult, int]:
    """A loop's result as the result of its last check, and how many checks it ran."""
    i = result.stderr.rfind(_POLLS_MARK)
    if i < 0:
        return result, 1
    count = result.stderr[i + len(_POLLS_MARK):].strip()
    return result.replace(stderr=result.stderr[:i]), int(count) if count.isdigit() else 1


def run_wait(wait: PlannedWait, *, run_on_node: RunOnNode, clock: Callable[[], float] = time.monotonic,
             sleep: Callable[[float], None] = time.sleep,
             stop: Callable[[], bool] = lambda: False, mask: Mask = _same) -> WaitOutcome:
    """Poll ``wait`` until it holds, its deadline passes, or ``stop()`` says so.

    Transport errors from ``run_on_node`` propagate: an unreachable node is not a
    failed health check, and the conductor classifies it as such.
    """
    start = clock()
    polls = 0
    while True:
        remaining = wait.deadline - (clock() - start)
        per_check = max(0.5, min(5.0, remaining))
        if wait.where == "control" and wait.request is not None:
            polls += 1
            check = request_check(wait.request, per_check, mask)
        elif wait.where == "control":
            polls += 1
            check = (http_check(wait.target, wait.status, wait.pattern, per_check, mask) if wait.kind == "http"
                     else tcp_check(wait.target, per_check))
        else:
            span = max(0.0, min(NODE_SPAN, remaining))
            result, count = loop_result(run_on_node(node_loop(wait, span), span + per_check + 5))
            polls += count
            check = node_check(wait, result, mask)
        if wait.state == "down":  # wait until the check stops holding (a port closed, a URL gone)
            check = Check(not check.ok, f"no longer: {check.message}" if not check.ok else f"still: {check.message}")
        waited = clock() - start
        if check.ok:
            return WaitOutcome(True, polls, waited, check.message)
        stopped = stop()
        if waited >= wait.deadline or stopped:
            if wait.kill_command and not stopped:
                return _kill_and_recheck(wait, run_on_node, polls, clock, start)
            why = "interrupted" if stopped else f"not healthy after {waited:.1f}s (deadline {wait.deadline:g}s)"
            return WaitOutcome(False, polls, waited, f"{why}: {check.message}", interrupted=stopped)
        sleep(min(wait.interval, wait.deadline - waited))


def _kill_and_recheck(wait: PlannedWait, run_on_node: RunOnNode, polls: int,
                      clock: Callable[[], float], start: float) -> WaitOutcome:
    """The deadline passed with the process still running: SIGKILL it, then check it is gone
    (a killed process is reaped within moments: up to 25 checks 0.2 s apart, on the node)."""
    assert wait.kill_command is not None
    script = f"{wait.kill_command}\n" + node_loop(wait, 5.0, interval=0.2, max_polls=25)
    result, count = loop_result(run_on_node(script, 30))
    polls += count
    if node_check(wait, result).ok:
        return WaitOutcome(True, polls, clock() - start,
                           f"still running at the {wait.deadline:g}s deadline: killed with SIGKILL")
    return WaitOutcome(False, polls, clock() - start,
                       f"still running after the {wait.deadline:g}s deadline and SIGKILL")
