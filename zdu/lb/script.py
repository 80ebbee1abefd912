"""The ``script`` load-balancer hook: an executable the user writes.

Called on the control machine as ``HOOK disable NODE`` / ``HOOK enable NODE``
(arguments passed as a list, never through a shell), with the node also in the
environment: ZDU_ACTION, ZDU_NODE_NAME, ZDU_NODE_HOST, ZDU_NODE_PORT,
ZDU_NODE_GROUP, ZDU_LB_SERVER.  Exit status 0 means done; anything else, or
running past ``timeout`` seconds, is a failed action.  Topology::

    load_balancer: {type: script, path: scripts/lb-hook-example.sh, timeout: 60, healthy: false}

With ``healthy: true`` the hook also answers ``HOOK healthy NODE`` (before each wave and at the
end, about each node the run put back): exit 0 = in rotation and healthy, exit 1 = not (its last
line of output says what the balancer shows); anything else, or no answer in ``timeout``, is a
balancer that cannot be read (a warning).

The hook runs in a session of its own, so the Ctrl-C or hang-up that reaches
zdupgrade's terminal never reaches the hook: an action that has started finishes
(zdupgrade itself stops at its next safe point).  Only a timeout stops it -- its
whole process group gets SIGTERM, then SIGKILL after a short grace.  Output (stdout
and stderr together, the last 64 KiB) is returned in ``details["output"]``, never
printed: the caller's event recorder masks secrets in it.
"""
from __future__ import annotations

import os
import selectors
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from zdu.config.values import describe_value
from zdu.errors import ConfigError, LoadBalancerError
from zdu.model import Node
from zdu.lb.base import LbResult, LoadBalancer, refuse_control_characters
from zdu.planning.masking import truncation_note

_OPTIONS = {"path", "timeout", "env", "healthy"}

#: the most output kept per action (the tail: errors come last)
OUTPUT_LIMIT = 64 * 1024
#: after SIGTERM on timeout, how long the group gets before SIGKILL
KILL_GRACE = 2.0
#: after the hook exits, how long a process it left behind may keep its output open
_DRAIN_GRACE = 0.5
#: after SIGKILL, how long to wait for a process that still does not go away
_UNKILLABLE_WAIT = 5.0


@dataclass
class _Run:
    """What one execution of the hook came to."""

    returncode: int | None
    output: str
    output_bytes: int
    timed_out: bool = False
    needed_kill: bool = False      # SIGTERM was not enough
    left_running: bool = False     # the hook exited but something it started holds its output


class ScriptLoadBalancer(LoadBalancer):
    """Runs a user-supplied executable for each action."""

    name = "script"

    def __init__(self, path: str, *, timeout: float = 60.0, env: Mapping[str, str] | None = None,
                 healthy: bool = False) -> None:
        # absolute: checked where it is run (a bare ``hook.sh`` would be looked up on PATH by exec)
        self.path = os.path.abspath(Path(path).expanduser())
        self.timeout = timeout
        self.env = dict(env or {})
        self.answers_healthy = healthy

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> "ScriptLoadBalancer":
        """Build from the topology's ``load_balancer:`` mapping; ConfigError naming the field."""
        refuse_control_characters(dict(options), "load_balancer")
        unknown = sorted(set(options) - _OPTIONS)
        if unknown:
            raise ConfigError(f"load_balancer: unknown field {unknown[0]!r} for type script "
                              f"(allowed: {', '.join(sorted(_OPTIONS))})")
        path = options.get("path")
        if not isinstance(path, str) or not path:
            raise ConfigError("load_balancer.path: the script hook needs the path of an executable")
        timeout = options.get("timeout", 60)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < 86400:
            raise ConfigError(f"load_balancer.timeout: expected a positive number of seconds "
                              f"(below a day), got {timeout!r}")
        env = options.get("env") or {}
        if not isinstance(env, Mapping):
            raise ConfigError("load_balancer.env: expected a mapping of environment variables")
        for key in env:
            if not isinstance(key, str) or not key or "=" in key:
                raise ConfigError(f"load_balancer.env: {key!r} is not an environment variable name")
        healthy = options.get("healthy", False)
        if not isinstance(healthy, bool):
            raise ConfigError(f"load_balancer.healthy: expected true or false, got {describe_value(healthy)}")
        return cls(path, timeout=float(timeout), env={str(k): str(v) for k, v in env.items()}, healthy=healthy)

    def validate(self, nodes: Sequence[Node]) -> None:
        """ConfigError for a control character in any node value the hook is given: a
        hook that pastes ``$ZDU_LB_SERVER`` into a command line must not meet a newline."""
        for node in nodes:
            _refuse_in_node(node)

    def check(self, nodes: Sequence[Node]) -> None:
        """Refuse, before any node is touched, a hook that exec could not start: missing, a
        directory, not executable, a text file without ``#!``, an interpreter that is not there."""
        self.validate(nodes)
        if os.path.isdir(self.path):
            raise LoadBalancerError(f"load-balancer hook script is a directory: {self.path}")
        if not os.path.isfile(self.path):
            raise LoadBalancerError(f"load-balancer hook script not found: {self.path}")
        if not os.access(self.path, os.X_OK):
            raise LoadBalancerError(f"load-balancer hook script is not executable: {self.path} (chmod +x)")
        why = _unrunnable(self.path, self.env.get("PATH", os.environ.get("PATH", os.defpath)))
        if why:
            raise LoadBalancerError(f"load-balancer hook script cannot be run: {self.path}: {why}")

    def disable(self, node: Node) -> LbResult:
        return self._call("disable", node)

    def enable(self, node: Node) -> LbResult:
        return self._call("enable", node)

    def describe(self, action: str, node: Node) -> str:
        return f"{self.path} {action} {node.name} (timeout {self.timeout:g}s)"

    def healthy(self, nodes: Sequence[Node]) -> Mapping[str, bool | str] | None:
        """With ``healthy: true``: ``HOOK healthy NODE`` for each node, one after the other (exit 0:
        True; exit 1: its last line of output, or False); None without it (the hook cannot tell).
        LoadBalancerError for any other answer."""
        if not self.answers_healthy:
            return None
        answers: dict[str, bool | str] = {}
        for node in nodes:
            result = self._call("healthy", node)
            code = result.details.get("exit_code")
            if code == 0:
                answers[node.name] = True
            elif code == 1 and not result.details.get("left_running"):
                tail = _last_line(str(result.details.get("output") or ""))
                answers[node.name] = tail or False      # whole: the run masks it, then cuts it
            else:
                raise LoadBalancerError(f"healthy {node.name}: {result.message}")
        return answers

    def _call(self, action: str, node: Node) -> LbResult:
        env = dict(os.environ)
        env.update(self.env)
        env.update(ZDU_ACTION=action, ZDU_NODE_NAME=node.name, ZDU_NODE_HOST=node.host,
                   ZDU_NODE_PORT=str(node.port), ZDU_NODE_GROUP=node.group, ZDU_LB_SERVER=node.lb_name)
        started = time.monotonic()
        label = f"{self.path} {action} {node.name}"
        try:
            _refuse_in_node(node)
        except ConfigError as exc:
            return LbResult(False, f"{label}: {exc}; the hook was not run", 0.0,
                            {"exit_code": None, "output": ""})
        try:
            run = _run_hook([self.path, action, node.name], env, self.timeout)
        except (OSError, ValueError) as exc:  # missing, not executable, NUL in an argument
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            if os.path.isfile(self.path):   # "No such file or directory" for a file that is there
                why = _unrunnable(self.path, env.get("PATH", os.defpath)) or why
            return LbResult(False, f"{self.path}: cannot run: {why}", time.monotonic() - started,
                            {"exit_code": None, "output": ""})
        duration = time.monotonic() - started
        details: dict[str, Any] = {"exit_code": run.returncode, "output": run.output}
        last = run.output
        if run.output_bytes > OUTPUT_LIMIT:
            # the kept tail starts at any byte, maybe inside a secret: the note in front tells the
            # masker so (it masks a secret's end there), and that first, cut line is no message
            dropped = run.output_bytes - OUTPUT_LIMIT
            details.update(output=truncation_note(dropped, "bytes") + run.output, output_truncated_bytes=dropped)
            last = run.output.partition("\n")[2]
        if run.left_running:
            details["left_running"] = True
        if run.timed_out:
            how = (f"SIGTERM ignored, SIGKILL after {KILL_GRACE:g}s" if run.needed_kill
                   else "stopped by SIGTERM")
            tail = _last_line(last)
            return LbResult(False, f"{label}: no answer within {self.timeout:g}s; killed its "
                                   f"process group ({how})" + (f"; its last output: {tail}" if tail else ""),
                            duration, details)
        tail = _last_line(last)
        code = run.returncode
        if code is None:
            return LbResult(False, f"{label}: did not exit", duration, details)
        status = f"exit {code}{_exit_meaning(code)}" if code >= 0 else f"killed by {_signal_name(-code)}"
        if run.left_running:
            tail += ("; " if tail else "") + ("it left a process running that holds its output open "
                                              f"(not waited for past {_DRAIN_GRACE:g}s)")
        return LbResult(code == 0, status + (f": {tail}" if tail else ""), duration, details)


def _refuse_in_node(node: Node) -> None:
    for field in ("name", "host", "group", "lb_name"):
        refuse_control_characters(getattr(node, field), f"node {node.name!r}: "
                                                        f"{'lb_server' if field == 'lb_name' else field}")


def _run_hook(argv: list[str], env: dict[str, str], timeout: float) -> _Run:
    """Run ``argv`` in a new session; collect the tail of its output; bounded by ``timeout``
    (plus the kill grace, plus a few seconds for a process that will not die)."""
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = bytearray()
    total = 0
    deadline = time.monotonic() + timeout
    exited_at: float | None = None
    timed_out = needed_kill = eof = False

    def kill() -> None:
        nonlocal timed_out, needed_kill, deadline
        timed_out = True
        needed_kill = _kill_group(proc.pid)
        deadline = time.monotonic() + _UNKILLABLE_WAIT

    try:
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while not eof:
                now = time.monotonic()
                if exited_at is None and _exited(proc.pid):
                    exited_at = now
                if exited_at is not None and now - exited_at > _DRAIN_GRACE:
                    break            # a process the hook left behind still holds the pipe
                if exited_at is None and now >= deadline:
                    if timed_out:
                        break        # killed, and still not gone
                    kill()
                    continue         # read what is left until EOF or the drain grace
                if sel.select(min(0.05, max(0.0, deadline - now))):
                    data = os.read(fd, 65536)
                    eof = not data
                    total += len(data)
                    buf += data
                    if len(buf) > OUTPUT_LIMIT:
                        del buf[:-OUTPUT_LIMIT]
        if exited_at is None and eof:
            # the hook closed its output but has not exited yet
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                if not timed_out:
                    kill()
    finally:
        proc.stdout.close()
    try:
        returncode: int | None = proc.wait(_UNKILLABLE_WAIT)
    except subprocess.TimeoutExpired:
        returncode = None
    return _Run(returncode, buf.decode(errors="replace"), total, timed_out, needed_kill,
                left_running=exited_at is not None and not timed_out and not eof)


def _exited(pid: int) -> bool:
    """True once ``pid`` has exited, without reaping it: while it is a zombie its pid --
    the group id we may have to signal -- cannot be reused by another process."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None


def _kill_group(pgid: int) -> bool:
    """SIGTERM the hook's process group, SIGKILL it after KILL_GRACE if the hook is still
    there; True when SIGKILL was needed.  Children the hook started die with it."""
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + KILL_GRACE
    while time.monotonic() < deadline:
        if _exited(pgid):
            break
        time.sleep(0.02)
    needed = not _exited(pgid)
    _signal_group(pgid, signal.SIGKILL)   # the leader may be gone while its children linger
    return needed


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _last_line(output: str) -> str:
    lines = output.strip().splitlines()
    # whole: the gate masks the message before it cuts it (a cut through a secret would leave
    # a piece the masker cannot know)
    return lines[-1].strip() if lines else ""


def _unrunnable(path: str, search_path: str) -> str | None:
    """Why exec would refuse ``path`` (an existing, executable file), or None: a text file without
    ``#!`` (ENOEXEC), a ``#!`` interpreter -- or ``/usr/bin/env``'s program -- that is missing,
    a ``#!`` line ending in a carriage return.  A file it cannot read is left to exec."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(256)
    except OSError:
        return None
    if head.startswith(b"\x7fELF"):
        return None
    if not head.startswith(b"#!"):
        if b"\0" in head:
            return None           # some other binary format (binfmt_misc): exec decides
        return "its first line is not #! and an interpreter (e.g. #!/bin/sh), so exec cannot start it"
    line = head[2:].split(b"\n", 1)[0]
    if line.endswith(b"\r"):
        return "its #! line ends in a carriage return (Windows line endings): the interpreter would be missing"
    words = line.replace(b"\t", b" ").split(b" ")
    words = [w for w in words if w]
    if not words:
        return "its #! line names no interpreter"
    interpreter = os.fsdecode(words[0])
    if not os.path.isfile(interpreter) or not os.access(interpreter, os.X_OK):
        return f"its #! interpreter {interpreter} is not an executable file"
    if os.path.basename(interpreter) == "env" and len(words) > 1:
        args = words[1:]
        if args[0] in (b"-S", b"--split-string") and len(args) > 1:
            args = args[1:]
        program = os.fsdecode(args[0])
        if not program.startswith("-") and "=" not in program and shutil.which(program, path=search_path) is None:
            return f"its #! line runs {interpreter} {program}, and {program} is not on PATH"
    return None


def _exit_meaning(code: int) -> str:
    """What a shell's exit status above 125 says, as a note (a hook is most often a shell script)."""
    if code == 126:
        return " (a command it ran could not be executed)"
    if code == 127:
        return " (a command it ran was not found)"
    if 128 < code < 128 + signal.NSIG:
        return f" (128+{code - 128}: a command it ran was killed by {_signal_name(code - 128)})"
    return ""


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
