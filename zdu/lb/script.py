"""The ``script`` load-balancer hook: an executable the user writes.

Called on the control machine as ``HOOK disable NODE`` / ``HOOK enable NODE``
(arguments passed as a list, never through a shell), with the node also in the
environment: ZDU_ACTION, ZDU_NODE_NAME, ZDU_NODE_HOST, ZDU_NODE_PORT,
ZDU_NODE_GROUP, ZDU_LB_SERVER.  Exit status 0 means done; anything else, or
running past ``timeout`` seconds, is a failed action.  Topology::

    load_balancer: {type: script, path: scripts/lb-hook-example.sh, timeout: 60}
"""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from zdu.errors import ConfigError, LoadBalancerError
from zdu.model import Node
from zdu.lb.base import LbResult, LoadBalancer

_OPTIONS = {"path", "timeout", "env"}


class ScriptLoadBalancer(LoadBalancer):
    """Runs a user-supplied executable for each action."""

    name = "script"

    def __init__(self, path: str, *, timeout: float = 60.0, env: Mapping[str, str] | None = None) -> None:
        self.path = str(Path(path).expanduser())
        self.timeout = timeout
        self.env = dict(env or {})

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> "ScriptLoadBalancer":
        unknown = sorted(set(options) - _OPTIONS)
        if unknown:
            raise ConfigError(f"load_balancer: unknown field {unknown[0]!r} for type script "
                              f"(allowed: {', '.join(sorted(_OPTIONS))})")
        path = options.get("path")
        if not isinstance(path, str) or not path:
            raise ConfigError("load_balancer.path: the script hook needs the path of an executable")
        timeout = options.get("timeout", 60)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ConfigError(f"load_balancer.timeout: expected a positive number of seconds, got {timeout!r}")
        env = options.get("env") or {}
        if not isinstance(env, Mapping):
            raise ConfigError("load_balancer.env: expected a mapping of environment variables")
        return cls(path, timeout=float(timeout), env={str(k): str(v) for k, v in env.items()})

    def check(self, nodes: Sequence[Node]) -> None:
        if not os.path.isfile(self.path):
            raise LoadBalancerError(f"load-balancer hook script not found: {self.path}")
        if not os.access(self.path, os.X_OK):
            raise LoadBalancerError(f"load-balancer hook script is not executable: {self.path} (chmod +x)")

    def disable(self, node: Node) -> LbResult:
        return self._call("disable", node)

    def enable(self, node: Node) -> LbResult:
        return self._call("enable", node)

    def describe(self, action: str, node: Node) -> str:
        return f"{self.path} {action} {node.name} (timeout {self.timeout:g}s)"

    def _call(self, action: str, node: Node) -> LbResult:
        env = dict(os.environ)
        env.update(self.env)
        env.update(ZDU_ACTION=action, ZDU_NODE_NAME=node.name, ZDU_NODE_HOST=node.host,
                   ZDU_NODE_PORT=str(node.port), ZDU_NODE_GROUP=node.group, ZDU_LB_SERVER=node.lb_name)
        started = time.monotonic()
        try:
            proc = subprocess.run([self.path, action, node.name], env=env, capture_output=True, text=True,
                                  errors="replace", timeout=self.timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return LbResult(False, f"{self.path} {action} {node.name}: no answer within {self.timeout:g}s "
                                   "(killed)", time.monotonic() - started)
        except OSError as exc:
            return LbResult(False, f"{self.path}: cannot run: {exc.strerror}", time.monotonic() - started)
        output = (proc.stdout + proc.stderr).strip()
        tail = output.splitlines()[-1][:300] if output else ""
        message = f"exit {proc.returncode}" + (f": {tail}" if tail else "")
        return LbResult(proc.returncode == 0, message, time.monotonic() - started,
                        {"exit_code": proc.returncode, "output": output[-4000:]})
