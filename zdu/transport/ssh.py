"""Run commands on a node over SSH: one Fabric connection per node, opened once, reused.

The only module that imports fabric / paramiko.  Every failure those libraries (or
the socket layer) raise is mapped here to :mod:`zdu.errors`, with a message naming
the node and ``host:port`` in plain words.

Host keys (never silently auto-added):

* ``known_hosts`` (``settings.known_hosts``, default ``~/.ssh/known_hosts``) is read
  as *system* host keys, so paramiko never writes it back.
* ``strict``: a key not in known_hosts is refused (:class:`HostKeyError` with the
  offered key type and SHA256 fingerprint and the file we looked in).
* ``accept-new``: an unknown key is appended to known_hosts (created 0600 if
  missing) and reported through ``on_host_key_accepted(node, key_type, fingerprint)``.
* A *changed* key (known_hosts holds another key for ``host:port``) is refused
  under either policy, naming the expected and the offered fingerprints.
* ``node.host_key`` pins a fingerprint: the offered key must match it whatever the
  policy.  A matching pin is trust enough on its own: the key need not be in
  known_hosts (and is not written there), but a known_hosts entry that contradicts
  it still counts as a changed key.  For an unknown key the pin is checked before
  authentication; for a key found in known_hosts it is checked right after the
  handshake, before any command runs.

Connection failures: refused / unreachable / connect or banner timeout / reset during
the handshake are transient and retried ``settings.connect_retries`` times with
exponential backoff (:mod:`zdu.transport.retry`, injectable ``sleep``); DNS, auth
and host-key failures are not retried.

A dropped connection while a command runs (sshd killed, node crashed, link reset)
does **not** raise: the command was sent and we cannot know how it ended, so
``run`` returns ``CommandResult(exit_code=None, error="unreachable")`` with whatever
output had arrived.  The next ``run`` reconnects (one ``open()``, with the normal
connect retries); if that fails it raises :class:`UnreachableError`.  ``run``
raises only when the command could not be started at all.

Commands run through one long-lived shell per connection (:mod:`zdu.transport.shell`: a
command costs one round trip, not a new SSH session and login), or -- where that shell cannot
start (no ``setsid`` on the node, said once per run) or with ``shell_session=False`` -- one exec
channel each.  The results are the same either way.

Command timeout: the remote process group of the command gets SIGTERM, then SIGKILL
after a one-second grace, then the channel is closed.  To know that group, the
command's own shell reports its ``$$`` on stderr, framed by a random nonce
(it runs as a session leader: sshd makes every exec command one, the shell session's
driver uses ``setsid``); the record is taken out of stderr before anyone sees it.  The kill is a
``kill -SIG -PGID`` run in a second session on the same connection (the SSH
``signal`` request is only a fallback when the group is unknown: OpenSSH refuses it
for root logins, which skip privilege separation).  The result is ``exit_code=None,
error="timeout"`` with the output so far.  A command killed
by a signal otherwise reports ``128 + signal number`` as its exit code, like a shell.
"""
from __future__ import annotations

import errno
import fcntl
import hmac
import logging
import os
import re
import secrets
import shlex
import signal as _signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import paramiko
from fabric import Config, Connection
from fabric.runners import Remote
from invoke.exceptions import CommandTimedOut, ThreadException
from paramiko.common import MSG_CHANNEL_REQUEST, MSG_GLOBAL_REQUEST
from paramiko.ssh_exception import (AuthenticationException, BadHostKeyException,
                                    NoValidConnectionsError, PasswordRequiredException,
                                    SSHException)

from zdu.config.ssh_config import NODE, SSH, SSH_CONFIG, ResolvedTarget, resolve
from zdu.errors import AuthError, HostKeyError, TransportError, UnreachableError
from zdu.model import CommandResult, Node, SshSettings
from zdu.transport.base import STEP_TAG, BastionError, CommandHandler, InvalidCommandError
from zdu.transport.local import IncrementalDecodeMixin, OutputCapture, TimeoutKillMixin
from zdu.transport.retry import Backoff, Sleep, retry_call
from zdu.transport.shell import (END_LOST_STEP, END_ORPHAN, OutputGate, RecordSplitter, StepState,
                                 begin_mark, driver_command, exec_launcher, exec_stdin,
                                 exec_step_note, frame, parse_pgid, pgid_report)

HostKeyCallback = Callable[[str, str, str], None]

#: grace between SIGTERM and SIGKILL for a timed-out remote command
KILL_GRACE = 1.0
#: seconds between keepalives on an idle connection
KEEPALIVE = 15
#: at least this long for a new shell session to start (its login shell reads rc files first)
SHELL_START = 10.0
#: a command goes into the shell session only if the node answered within this long; after a
#: quiet spell one SSH round trip (a global request sshd must answer) proves it is there first.
#: A frozen node (paused VM, silent link) must never receive a command that it would run when it
#: thaws, after the run gave up on it -- the exec channel had that from its session handshake.
LIVE_WINDOW = 1.0

# paramiko logs the failures we map and report ourselves (with tracebacks, at ERROR); with no
# logging configured they would land on stderr through logging's last-resort handler
logging.getLogger("paramiko").addHandler(logging.NullHandler())

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_known_hosts_lock = threading.Lock()


# --------------------------------------------------------------------------- paramiko glue

def _handle_channel_request(chan: paramiko.Channel, m: paramiko.Message) -> None:
    """paramiko ignores ``exit-signal``; record it as ``128 + signum`` like a shell does.  Either
    exit request also notes when it came (``chan.zdu_exited_at``, monotonic): a channel can stay
    open after it, while a process the command started holds its output."""
    start = m.packet.tell()
    key = m.get_text()
    if key in ("exit-status", "exit-signal"):
        chan.zdu_exited_at = time.monotonic()  # type: ignore[attr-defined]
    if key == "exit-signal":
        m.get_boolean()                        # want_reply: always false for exit-signal
        name = m.get_text()
        try:
            number = _signal.Signals[f"SIG{name}"].value
        except KeyError:
            number = 127
        chan.exit_status = 128 + number
        chan.status_event.set()
        return
    m.packet.seek(start)
    paramiko.Channel._handle_request(chan, m)  # type: ignore[attr-defined]


class _Transport(paramiko.Transport):
    _channel_handler_table = {**paramiko.Transport._channel_handler_table,  # type: ignore[attr-defined]
                              MSG_CHANNEL_REQUEST: _handle_channel_request}


def _send_signal(chan: paramiko.Channel, name: str) -> None:
    """RFC 4254 §6.9 ``signal`` request (paramiko has no public call for it)."""
    m = paramiko.Message()
    m.add_byte(bytes([MSG_CHANNEL_REQUEST]))
    m.add_int(chan.remote_chanid)
    m.add_string("signal")
    m.add_boolean(False)
    m.add_string(name)
    chan.transport._send_user_message(m)  # type: ignore[union-attr]


def _held_open_note(code: int | None, after: float) -> str:
    """What a timed-out result adds when the command itself had exited (with ``code``, ``after``
    seconds) and a process it started kept its output open."""
    return (f"\n[zdupgrade: the command itself exited (code {code}) after {after:.1f}s, but a "
            "process it started kept its output open until the timeout; start daemons with their "
            "output redirected (>/dev/null 2>&1)]\n")


def _end_failed(code: int | None) -> str:
    """Why an end-a-group script did not end its group, from its exit code."""
    if code is None:
        return "its own result was lost"
    return "it is still there after SIGKILL" if code == 4 else f"exit {code}"


class _Remote(TimeoutKillMixin, IncrementalDecodeMixin, Remote):
    """Fabric's Remote runner with a real kill, stdin closed, and "did it start" tracking.

    The command's text goes on the channel's stdin (:func:`~zdu.transport.shell.exec_launcher`),
    preceded by a mark on both streams where its own output begins, random per command
    (:func:`~zdu.transport.shell.begin_mark`): what the login shell's rc files print before it (a
    banner, a motd on stderr) is dropped, not given to the step (:class:`OutputGate`).  Then,
    to know the command's process group, one ``printf`` writes the shell's ``$$`` to stderr (sshd
    makes each session command a session leader, so that is its process group), framed by a
    random nonce: the record is taken out of stderr wherever it lands."""

    command_sent = False
    pgid: int | None = None
    leader_start = ""           #: the group leader's start time (/proc), "" if unknown
    exit_seen = False           #: the node sent the exit status and the output's end itself
    #: the kill found the command itself exited already (its exit code, when, monotonic): a
    #: process it started held its output until the timeout
    held_open: tuple[int, float] | None = None
    step_tag: str | None = None     #: a run's step: noted on the node for a resume
    _kill_wait = KILL_GRACE * 2 + 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._nonce = secrets.token_hex(8)
        self._marks = RecordSplitter(f"{self._nonce}:".encode())
        begin = secrets.token_hex(8)
        self._begin = begin_mark(begin)
        self._out_gate, self._err_gate = OutputGate(begin), OutputGate(begin)

    #: seconds to wait for the node to answer the exec request (None: forever)
    start_timeout: float | None = None
    #: the node did not answer the exec request within start_timeout
    start_expired = False

    def send_start_message(self, command: str) -> None:
        note = f"{exec_step_note(self.step_tag)}\n" if self.step_tag else ""
        wrapped = f"{self._begin}\n{pgid_report(self._nonce)}\n{note}{command}"
        # paramiko waits for the answer to an exec request without any timeout, and invoke's
        # command timer starts only after it: a node that freezes right then (paused, link
        # gone silent) would hang the run for good.  The request holds a small reader only;
        # the command's text follows on stdin (not an argument other users see in `ps`)
        launcher = exec_launcher(self._nonce)
        if not _bounded(self.channel, lambda: super(_Remote, self).send_start_message(launcher),
                        self.start_timeout):
            self.start_expired = True
            raise SSHException(f"no answer to the exec request within {self.start_timeout:g}s")
        self.command_sent = True
        self.channel.sendall(exec_stdin(self._nonce, wrapped))
        # we never feed stdin: give the command EOF instead of a pipe that never ends
        self.channel.shutdown_write()

    @property
    def began(self) -> bool:
        """The command's begin mark came (on either stream: rc files may have sent the login
        shell's other stream elsewhere for good): it started."""
        return self._out_gate.opened or self._err_gate.opened

    def read_proc_stdout(self, num_bytes: int) -> bytes:
        # what precedes the begin mark is the rc files'; never return b"" before the real end
        while True:
            data = self.channel.recv(num_bytes)
            if not data:
                return b""
            rest = self._out_gate.feed(data)
            if rest:
                return rest

    def read_proc_stderr(self, num_bytes: int) -> bytes:
        # take the begin mark and the pgid record out; never return b"" before the real end
        # (invoke stops there)
        while True:
            data = self.channel.recv_stderr(num_bytes)
            if not data:
                return self._stderr_end()
            rest = self._err_gate.feed(data)
            if not rest:
                continue
            rest = self._marks.feed(rest)
            for record in self._marks.records:
                key, _, value = record.partition("=")
                found = parse_pgid(value) if key == "pgid" else None
                if found is not None:
                    self.pgid, self.leader_start = found
            self._marks.records.clear()
            if rest:
                return rest

    def _stderr_end(self) -> bytes:
        """stderr ended: the held-back part of a record (nothing, when the command never began)."""
        return self._marks.flush() if self._err_gate.opened else b""

    def not_started(self) -> str:
        """Why a command whose channel ended before its begin mark has no output: the last of
        what the node said on stderr instead (its login shell, the launcher)."""
        said = self._err_gate.dropped.decode("utf-8", "replace")
        return "[zdupgrade: the command did not start on the node" + \
            ("; the last it said on stderr:]\n" + said if said else "]\n")

    def _terminate(self) -> None:
        chan = self.channel
        exited_at = getattr(chan, "zdu_exited_at", None)
        if exited_at is not None and not self._wait_ended(0.1):     # (its end may be on its way)
            # the command's shell is gone, but its channel is open: what holds the output is a
            # process it started (a daemon, in its process group unless it left it); end it too
            self.held_open = (chan.exit_status, exited_at)
        for name in ("TERM", "KILL"):
            if chan.closed or self._ended():
                break
            if self.pgid:
                # root sessions are not privilege-separated and OpenSSH refuses the
                # "signal" request for them, so signal the group from a second session
                if not self._side_command(f"kill -{name} -{self.pgid} 2>/dev/null"):
                    break        # the node does not answer: a KILL would not get through either
            elif chan.status_event.is_set():
                break            # exited; no group to signal
            else:
                # fallback: a "signal" request races with the channel closing, and
                # sshd drops the whole connection on a request for a closed channel;
                # the next run() would then reconnect
                try:
                    _send_signal(chan, name)
                except Exception:  # noqa: BLE001 - the connection may be gone already
                    break
            self._wait_ended(KILL_GRACE)
        # before our own close: only the node's exit status and end of output count
        self.exit_seen = self._ended()
        chan.close()

    def _ended(self) -> bool:
        """The node sent the command's exit status and the end of its output (no process holds
        it any more)."""
        return self.channel.exit_status != -1 and self.channel.eof_received

    def _wait_ended(self, seconds: float) -> bool:
        """:meth:`_ended`, waiting up to ``seconds`` for it (or for the channel to close)."""
        deadline = time.monotonic() + seconds
        while not (self.channel.closed or self._ended()) and time.monotonic() < deadline:
            time.sleep(0.02)
        return self._ended()

    def _side_command(self, command: str) -> bool:
        return _side_command(self.channel.transport, command)


def _side_command(transport: paramiko.Transport | None, command: str) -> bool:
    """Run ``command`` in a second session; False if the node did not even answer."""
    if transport is None:
        return False
    try:
        side = transport.open_session(timeout=KILL_GRACE * 5)
        try:
            if not _bounded(side, lambda: side.exec_command(command), KILL_GRACE * 5):
                return False
            side.status_event.wait(KILL_GRACE * 5)
        finally:
            side.close()
    except Exception:  # noqa: BLE001 - best effort; the caller closes what it must
        return False
    return True


# --------------------------------------------------------------------------- known_hosts

WarningCallback = Callable[[str], None]


class KnownHosts:
    """A known_hosts file read the way OpenSSH reads it: a line that cannot be parsed
    (bad base64, truncated, too few fields, not UTF-8, an unknown marker) is skipped with
    a warning naming the file and line, and the other lines still count.  Host patterns
    (``*``, ``?``, ``!negated``), hashed names (``|1|...``) and ``@revoked`` lines are
    honoured; ``@cert-authority`` lines are skipped (host certificates are not supported)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.warnings: list[str] = []
        self.revoked: list[paramiko.PKey] = []
        self._plain: dict[str, list[paramiko.PKey]] = {}
        self._other: list[tuple[list[str], paramiko.PKey]] = []   # hashed names, patterns
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return
        for lineno, raw in enumerate(data.split(b"\n"), 1):
            self._line(lineno, raw)

    def _warn(self, lineno: int, why: str) -> None:
        self.warnings.append(f"{self.path}:{lineno}: skipped a known_hosts line: {why}")

    def _line(self, lineno: int, raw: bytes) -> None:
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            self._warn(lineno, "not valid UTF-8")
            return
        if not line or line.startswith("#"):
            return
        marker = None
        if line.startswith("@"):
            marker, _, line = line.partition(" ")
            line = line.strip()
            if marker == "@cert-authority":
                self._warn(lineno, "@cert-authority (host certificates) is not supported")
                return
            if marker != "@revoked":
                self._warn(lineno, f"unknown marker {marker[:40]!r}")
                return
        fields = line.split()
        if len(fields) < 3:
            self._warn(lineno, "expected 'hosts key-type base64-key'")
            return
        try:
            entry = paramiko.hostkeys.HostKeyEntry.from_line(" ".join(fields[:3]), lineno)
        except Exception as exc:  # noqa: BLE001 - InvalidHostKey, bad key data of any kind
            why = "the key is not valid base64" if isinstance(exc, paramiko.hostkeys.InvalidHostKey) \
                else f"the key cannot be read ({exc.__class__.__name__})"
            self._warn(lineno, why)
            return
        if entry is None or entry.key is None:
            return          # a key type paramiko does not know: it cannot be offered to us either
        if marker == "@revoked":
            self.revoked.append(entry.key)
            return
        names = [n for n in entry.hostnames if n]
        if any(n.startswith("|") or "*" in n or "?" in n or n.startswith("!") for n in names):
            self._other.append((names, entry.key))
        else:
            for name in names:
                self._plain.setdefault(name.lower(), []).append(entry.key)

    def lookup(self, name: str) -> list[paramiko.PKey]:
        """The keys known for ``name`` (``host`` or ``[host]:port``), in file order."""
        keys = list(self._plain.get(name.lower(), ()))
        for names, key in self._other:
            if _names_match(names, name):
                keys.append(key)
        return keys


def _names_match(names: list[str], name: str) -> bool:
    hit = False
    for pattern in names:
        if pattern.startswith("!"):
            if _wildcard(pattern[1:], name):
                return False
        elif pattern.startswith("|1|"):
            hashed = paramiko.HostKeys.hash_host(name, pattern)
            hit = hit or hmac.compare_digest(hashed.encode(), pattern.encode())
        elif _wildcard(pattern, name):
            hit = True
    return hit


def _wildcard(pattern: str, name: str) -> bool:
    """OpenSSH's match_pattern: ``*`` and ``?`` only (``[`` is literal, as in ``[host]:port``)."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern.lower())
    return re.fullmatch(regex, name.lower()) is not None


# --------------------------------------------------------------------------- host-key check

@dataclass
class _HostCheck:
    """Everything needed to judge one server's host key (a node's or a jump host's)."""

    who: str                           # the TransportError's node field
    what: str                          # whose key: "10.0.0.5:22"
    name: str                          # the known_hosts name: host or [host]:port
    known: KnownHosts
    policy: str
    pin: str | None
    pin_hint: str                      # where to pin it ("host_key in the topology")
    record: Callable[[str, paramiko.PKey], None]

    def verify(self, key: paramiko.PKey) -> None:
        """Accept ``key`` or raise HostKeyError; accept-new records an unknown key."""
        path = self.known.path
        if any(key == r for r in self.known.revoked):
            raise HostKeyError(self.who, f"host key for {self.what}: the server offered "
                                         f"{key.get_name()} {key.fingerprint}, which {path} "
                                         "marks @revoked", offered=key.fingerprint)
        known = self.known.lookup(self.name)
        if known and not any(key == k for k in known):
            expected = next((k for k in known if k.get_name() == key.get_name()), known[0])
            raise HostKeyError(
                self.who,
                f"HOST KEY CHANGED for {self.what}: {path} expects {expected.get_name()} "
                f"{expected.fingerprint} but the server offered {key.get_name()} "
                f"{key.fingerprint}. Either the host was reinstalled or someone is "
                f"intercepting the connection; if the change is expected, remove the old "
                f"entry (ssh-keygen -R {shlex.quote(self.name)} -f {shlex.quote(str(path))}).",
                expected=expected.fingerprint, offered=key.fingerprint)
        if self.pin:
            if _normalise_fingerprint(key.fingerprint) != _normalise_fingerprint(self.pin):
                raise HostKeyError(
                    self.who,
                    f"host key for {self.what} does not match the pinned fingerprint: expected "
                    f"{self.pin}, the server offered {key.get_name()} {key.fingerprint}. Refusing to connect.",
                    expected=self.pin, offered=key.fingerprint)
            return                     # a matching pin is trust enough
        if known:
            return
        if self.policy != "accept-new":
            raise HostKeyError(
                self.who,
                f"host key for {self.what} is not known: the server offered {key.get_name()} "
                f"{key.fingerprint}, which is not in {path} (host_key_policy is strict). "
                f"Check the fingerprint on the host, then add it to {path} or pin it as "
                f"{self.pin_hint}.",
                offered=key.fingerprint)
        self.record(self.name, key)


class _HostKeyGuard(paramiko.MissingHostKeyPolicy):
    """paramiko is given no host keys, so it asks this policy about every server key,
    right after the key exchange and before authentication."""

    def __init__(self, check: _HostCheck) -> None:
        self.check = check

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        self.check.verify(key)


def _transport_factory(known: list[paramiko.PKey]) -> Callable[..., paramiko.Transport]:
    """A Transport that asks first for the host-key types known_hosts holds, as paramiko
    does when it is given the keys itself (otherwise a server with several host keys may
    offer one we do not know and look "changed")."""
    preferred: list[str] = []
    for key in known:
        name = key.get_name()
        preferred += ["rsa-sha2-512", "rsa-sha2-256", name] if name == "ssh-rsa" else [name]

    def factory(sock: Any, **kwargs: Any) -> paramiko.Transport:
        transport = _Transport(sock, **kwargs)
        if preferred:
            options = transport.get_security_options()
            available = list(options.key_types)
            first = [k for k in dict.fromkeys(preferred) if k in available]
            options.key_types = first + [k for k in available if k not in first]
        return transport
    return factory


def _append_known_host(path: Path, hostname: str, key: paramiko.PKey) -> None:
    line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
    with _known_hosts_lock:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = "\n" + line
            os.write(fd, line.encode())
        finally:
            os.close(fd)


# --------------------------------------------------------------------------- jump hosts

def _hop_label(hop: ResolvedTarget) -> str:
    where = f"{hop.user}@{hop.endpoint}"
    return where if hop.name == hop.address else f"{hop.name} ({where})"


def _keys_text(target: ResolvedTarget) -> str:
    parts = [f"key {', '.join(target.key_files)}"] if target.key_files else []
    if target.agent:
        parts.append("the ssh-agent")
    if target.default_keys:
        parts.append("the default keys")
    return " and ".join(parts) or "no key at all (no key file, agent off)"


class _Link:
    """One SSH connection to one jump host, shared by every node behind it."""

    def __init__(self, hop: ResolvedTarget) -> None:
        self.hop = hop
        self.label = _hop_label(hop)
        self.lock = threading.Lock()
        self.client: paramiko.SSHClient | None = None
        self.failure: tuple[float, str, str] | None = None     # (monotonic, reason, problem)
        self.users: set[int] = set()
        self.connects = 0

    @property
    def transport(self) -> paramiko.Transport | None:
        client = self.client
        transport = client.get_transport() if client is not None else None
        return transport if transport is not None and transport.is_active() else None

    def drop(self) -> None:
        client, self.client = self.client, None
        _close_quietly(client)


class SshPool:
    """What the SSH handlers of one run share: one connection per jump host (opened on
    first use, reopened if it died, closed when the last handler using it closes), the
    parsed known_hosts files, and the warnings about them (each reported once).

    A jump host that fails (after the usual connect retries) fails every node behind it
    with the same :class:`~zdu.transport.base.BastionError` for ``failure_ttl`` seconds
    without another attempt: nodes that were waiting for that attempt share its result,
    and 100 nodes behind a dead bastion do not each wait for their own timeouts.
    """

    def __init__(self, *, failure_ttl: float = 30.0,
                 on_warning: WarningCallback | None = None,
                 give_up: Callable[[], bool] = lambda: False) -> None:
        self.failure_ttl = failure_ttl
        self.on_warning = on_warning
        #: true once connects should get no more retries (an interrupt before anything changed)
        self.give_up = give_up
        self.warnings: list[str] = []
        self._lock = threading.Lock()
        self._links: dict[tuple[Any, ...], _Link] = {}
        self._known: dict[Path, tuple[tuple[int, int], KnownHosts]] = {}
        self._exec_fallback_noted = False
        #: the connect attempts under way (each until it has logged in, or failed)
        self._handshakes: set[_Handshakes] = set()

    # ------------------------------------------------------------------ handshakes in flight

    def tracked(self, factory: Callable[..., paramiko.Transport]) -> "_Handshakes":
        """One connect attempt's registry (a context: use it around the connect): its
        ``factory`` wraps ``factory`` (a ``transport_factory``) and its ``tcp_connect`` makes the
        TCP connection; what they make counts as under way until the context ends."""
        return _Handshakes(self, factory)

    def abandon_connects(self) -> int:
        """End every handshake under way now (an interrupt before anything changed): each
        connect fails at once instead of at its timeout, saying it was given up, and is not
        retried: one still waiting for its TCP connection, for the SSH banner, the key exchange
        or the authentication.  Connections already made are not touched.  Returns how many
        attempts were under way.
        (A jump host's channel to the next hop is not cut; the jump host's own connect is.)"""
        with self._lock:
            pending = list(self._handshakes)
        for attempt in pending:
            attempt.abort()
        return len(pending)

    # ------------------------------------------------------------------ warnings, known_hosts

    def warn(self, message: str, also: WarningCallback | None = None) -> None:
        """Report ``message`` once per pool (to ``on_warning``, ``also`` and ``warnings``)."""
        with self._lock:
            if message in self.warnings:
                return
            self.warnings.append(message)
        for callback in (self.on_warning, also if also != self.on_warning else None):
            if callback is not None:      # the pool's and the handler's are often the same one
                callback(message)

    def note_exec_fallback(self, node: str, reason: str, also: WarningCallback | None = None) -> None:
        """The first node of the run whose shell session cannot start says so (once per pool)."""
        with self._lock:
            first, self._exec_fallback_noted = not self._exec_fallback_noted, True
        if first:
            self.warn(f"{node}: cannot keep a shell session on the node ({reason}); commands there "
                      "run in one SSH session each instead (slower: a new login per command), and so "
                      "on any other node where this happens", also)

    def known_hosts(self, path: Path, also: WarningCallback | None = None) -> KnownHosts:
        """``path`` parsed (again only when it changed); raises OSError if unreadable."""
        try:
            st = path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = (-1, -1)
        with self._lock:
            cached = self._known.get(path)
        if cached is not None and cached[0] == stamp:
            known = cached[1]
        else:
            known = KnownHosts(path)
            with self._lock:
                self._known[path] = (stamp, known)
        for message in known.warnings:
            self.warn(message, also)
        return known

    # ------------------------------------------------------------------ links

    def links(self) -> list[tuple[str, int]]:
        """``(bastion label, connections made so far)`` for every jump host used."""
        with self._lock:
            return [(link.label, link.connects) for link in self._links.values()]

    def open_channel(self, handler: "SshHandler", hops: tuple[ResolvedTarget, ...],
                     host: str, port: int, timeout: float) -> paramiko.Channel:
        """A ``direct-tcpip`` channel from the last of ``hops`` to ``host:port`` (what
        ``ssh -J`` does), connecting the hops first if needed.  Raises BastionError when
        a hop fails, ``_Transient`` when the last hop cannot reach ``host:port``."""
        link = self._link(handler, hops)
        transport = link.transport
        dest = f"{host}:{port}"
        if transport is None:
            raise _Transient(f"the connection to bastion {link.label} closed before a channel "
                             f"to {dest} could be opened")
        try:
            return transport.open_channel("direct-tcpip", (host, port), ("127.0.0.1", 0),
                                          timeout=timeout)
        except paramiko.ChannelException as exc:
            if exc.code == 1:       # SSH_OPEN_ADMINISTRATIVELY_PROHIBITED
                raise BastionError(handler.node.name, link.label, "forwarding",
                                   "it refuses to forward connections (AllowTcpForwarding "
                                   "or PermitOpen on the bastion)") from None
            raise _Transient(f"bastion {link.label} could not connect to {dest} "
                             f"({exc.text or 'connect failed'})") from None
        except (SSHException, EOFError, OSError) as exc:
            # the bastion's connection is dead or silent: drop it; the retry reconnects it
            with link.lock:
                link.drop()
            raise _Transient(f"bastion {link.label} did not open a channel to {dest} "
                             f"({_plain(exc)})") from None

    def release(self, handler: "SshHandler") -> None:
        """``handler`` is done: close the jump-host connections nobody else uses."""
        with self._lock:
            idle = []
            for link in self._links.values():
                link.users.discard(id(handler))
                if not link.users:
                    idle.append(link)
        # the longest chains first: their connections ride on the shorter ones
        for link in sorted(idle, key=lambda lk: -len(lk.hop.jumps)):
            with link.lock:
                link.drop()

    def close(self) -> None:
        """Close every jump-host connection."""
        with self._lock:
            links = list(self._links.values())
        for link in reversed(links):
            with link.lock:
                link.drop()

    def _link(self, handler: "SshHandler", hops: tuple[ResolvedTarget, ...]) -> _Link:
        settings = handler.settings
        key = (tuple(_hop_key(h) for h in hops), str(handler.known_hosts),
               settings.host_key_policy, settings.connect_retries)
        with self._lock:
            link = self._links.get(key)
            if link is None:
                link = self._links[key] = _Link(hops[-1])
            link.users.add(id(handler))
        if len(hops) > 1:
            self._link(handler, hops[:-1])      # registers the handler on the shorter chains
        with link.lock:
            if link.transport is not None:
                return link
            if link.failure and time.monotonic() - link.failure[0] < self.failure_ttl:
                _, reason, problem = link.failure
                raise BastionError(handler.node.name, link.label, reason, problem)
            link.drop()
            try:
                link.client = self._connect(handler, hops, link)
            except BastionError as exc:
                link.failure = (time.monotonic(), exc.reason, exc.problem)
                raise
            link.failure = None
            link.connects += 1
            return link

    def _connect(self, handler: "SshHandler", hops: tuple[ResolvedTarget, ...],
                 link: _Link) -> paramiko.SSHClient:
        hop, label, node = hops[-1], link.label, handler.node.name
        attempts = [0]

        def attempt() -> paramiko.SSHClient:
            attempts[0] += 1
            sock = None
            if len(hops) > 1:
                try:
                    sock = self.open_channel(handler, hops[:-1], hop.address, hop.port,
                                             hop.connect_timeout)
                except _Transient as exc:
                    raise _Transient(f"cannot connect to it: {exc.message}") from None
            try:
                return handler._open_client(hop, sock, who=node,
                                            what=hop.endpoint,
                                            pin_hint=f"ssh.jump_host_keys[{hop.name!r}]")
            except _Transient:
                raise
            except HostKeyError as exc:
                raise BastionError(node, label, "host-key", exc.detail) from None
            except AuthError as exc:
                raise BastionError(node, label, "auth", exc.detail) from None
            except TransportError as exc:
                raise BastionError(node, label, "unreachable", exc.detail) from None

        for path in hop.key_files:
            if hop.sources.get("key_files") != SSH_CONFIG and not os.path.isfile(path):
                raise BastionError(node, label, "auth", f"key file {path} does not exist")
        try:
            return retry_call(attempt, policy=handler._backoff, retry_if=_is_transient,
                              sleep=handler._sleep, give_up=self.give_up)
        except _Transient as exc:
            tries = f" (tried {attempts[0]} times)" if attempts[0] > 1 else ""
            raise BastionError(node, label, "unreachable", f"{exc.message}{tries}") from None


class _Handshakes:
    """What one connect attempt has under way (its TCP connection, then its transport),
    registered with the pool while the attempt runs, so that :meth:`SshPool.abandon_connects`
    can cut it short."""

    def __init__(self, pool: SshPool, factory: Callable[..., paramiko.Transport]) -> None:
        self._pool = pool
        self._factory = factory
        self._made: list[Any] = []
        #: the attempt was cut short (its error says that, not a timeout; it is not retried)
        self.aborted = False

    def __enter__(self) -> "_Handshakes":
        with self._pool._lock:
            self._pool._handshakes.add(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        with self._pool._lock:
            self._pool._handshakes.discard(self)

    def _track(self, thing: Any) -> None:
        with self._pool._lock:
            self._made.append(thing)
            if self.aborted:        # cut short before it had made this
                raise ConnectionAbortedError(errno.ECONNABORTED, "connect given up")

    def abort(self) -> None:
        """Cut what this attempt has under way short (from another thread); never raises."""
        with self._pool._lock:
            made = list(self._made)
            self.aborted = True
        for thing in made:
            _abort_handshake(thing)

    def factory(self, sock: Any, **kwargs: Any) -> paramiko.Transport:
        """The ``transport_factory`` to give paramiko."""
        transport = self._factory(sock, **kwargs)
        self._track(transport)
        return transport

    def tcp_connect(self, address: str, port: int, timeout: float) -> socket.socket:
        """The TCP connection paramiko would make itself (each address ``address`` resolves to,
        in turn; refused and unreachable ones collected into one NoValidConnectionsError), made
        here so that a connect waiting for an answer to its SYN can be cut short too."""
        infos = socket.getaddrinfo(address, port, socket.AF_UNSPEC, socket.SOCK_STREAM)
        candidates = [(i[0], i[4]) for i in infos if i[1] == socket.SOCK_STREAM] or [(i[0], i[4]) for i in infos]
        errors: dict[tuple[Any, ...], OSError] = {}
        for family, sockaddr in candidates:
            sock = _PromptSocket(family, socket.SOCK_STREAM)
            try:
                self._track(sock)
                sock.settimeout(timeout)
                sock.connect(sockaddr)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return sock
            except OSError as exc:
                sock.close()
                if self.aborted or exc.errno not in (errno.ECONNREFUSED, errno.EHOSTUNREACH):
                    raise
                errors[sockaddr] = exc
        raise NoValidConnectionsError(errors)


class _PromptSocket(socket.socket):
    """The TCP socket under an SSH connection, set so that no packet waits for a timer.

    paramiko sends each SSH packet with one ``send`` and sets no socket option, so two TCP
    defaults meet on every connection: Nagle's algorithm holds a small packet back while an
    earlier one is unacknowledged, and delayed ACK holds the acknowledgement back up to 40 ms
    (Linux's minimum) hoping to ride on a reply.  Each side's small packets in a row therefore
    stall: the client's auth request after the key exchange, and sshd's channel confirmation
    after the host-keys and debug messages it sends unasked once auth succeeds -- 40 ms each, on a
    LAN as on loopback, twice for every connection and once for every channel opened.

    ``TCP_NODELAY`` (set once connected) sends ours at once; sshd's Nagle is not ours to change,
    so each read re-arms ``TCP_QUICKACK`` (Linux; the kernel drops it again by itself), which
    acknowledges what sshd sent at once and lets its next packet go.  On a local sshd, connecting
    and one exec channel take 20 ms instead of 105 ms, and a connect with the shell session's
    start and first command 32 ms instead of 118 ms (``benchmarks/README.md``)."""

    __slots__ = ()

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        data = super().recv(bufsize, flags)
        if data and _QUICKACK is not None:
            try:
                self.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
            except OSError:     # closed under us by an abandoned connect: the read said what happened
                pass
        return data


#: Linux's TCP_QUICKACK (elsewhere there is nothing to re-arm)
_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


def _abort_handshake(thing: Any) -> None:
    """Cut a connect short from another thread.  Shutting a socket down wakes whatever waits on
    it at once (a connect for its SYN's answer, the transport thread's read); closing alone
    would not, and a transport not started yet ignores ``close``.  Never raises."""
    sock = thing.sock if isinstance(thing, paramiko.Transport) else thing
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except Exception:  # noqa: BLE001 - not connected yet or already gone, or a jump channel closing
        pass
    if isinstance(thing, paramiko.Transport):
        _close_quietly(thing)


def _hop_key(hop: ResolvedTarget) -> tuple[Any, ...]:
    return (hop.address, hop.port, hop.user, hop.key_files, hop.agent, hop.default_keys,
            hop.host_key, hop.connect_timeout)


_shared_pool: SshPool | None = None


def shared_pool() -> SshPool:
    """The process-wide pool handlers use when none is given."""
    global _shared_pool
    with _known_hosts_lock:
        if _shared_pool is None:
            _shared_pool = SshPool()
        return _shared_pool


# --------------------------------------------------------------------------- the handler

#: the longest command (characters, exports included) sent through the shell session; a longer one
#: goes over an exec channel of its own.  The driver's ``read`` takes its stdin a byte at a time
#: (60 KB took a second) and the command's environment variable holds at most 128 KiB on Linux
#: (140 KB failed with "Argument list too long", 1 MB ran into its timeout); an exec channel's
#: reader takes any size at the cost of one more session (~20 ms)
SHELL_COMMAND_MAX = 16 * 1024


class SshHandler(CommandHandler):
    """Runs commands on one node over one reused SSH connection.

    :param node: the node (host, port, user, key_file, proxy_jump, host_key pin).
    :param settings: key file, known_hosts file, host-key policy, timeouts, retries,
        ssh_config file, proxy_jump, agent, jump-host pins.
    :param target: how to reach the node; by default ``resolve(node, settings)``
        (:mod:`zdu.config.ssh_config`: topology first, then ssh_config).
    :param pool: what handlers of one run share (jump-host connections, known_hosts);
        by default :func:`shared_pool`.
    :param on_host_key_accepted: called as ``(node_name, key_type, fingerprint)``
        when ``accept-new`` trusts and records a new host key (a jump host's too).
    :param on_warning: told each warning once per pool (a malformed known_hosts line
        skipped, an ssh_config note).
    :param sleep: the backoff's sleep (tests pass a fake).
    :param backoff: the retry policy for transient connect failures; by default
        ``Backoff(retries=settings.connect_retries)`` (0.5 s, 1 s, 2 s, ... capped at 8 s).
    :param shell_session: run commands through one long-lived shell on the node
        (:mod:`zdu.transport.shell`; the default); False: one exec channel per command.
    """

    #: the shell that runs the driver on the node
    driver_shell = "/bin/sh"

    def __init__(self, node: Node, settings: SshSettings, *,
                 target: ResolvedTarget | None = None, pool: SshPool | None = None,
                 on_host_key_accepted: HostKeyCallback | None = None,
                 on_warning: WarningCallback | None = None,
                 sleep: Sleep = time.sleep, backoff: Backoff | None = None,
                 shell_session: bool = True) -> None:
        super().__init__(node)
        self.settings = settings
        self.target = target if target is not None else resolve(node, settings)
        self.pool = pool if pool is not None else shared_pool()
        self.on_host_key_accepted = on_host_key_accepted
        self.on_warning = on_warning
        self.user = self.target.user
        self.address = self.target.endpoint
        if self.target.jumps:
            self.address += " via " + " -> ".join(_hop_label(j) for j in self.target.jumps)
        self.known_hosts = Path(os.path.expanduser(settings.known_hosts_file))
        self._sleep = sleep
        self._backoff = backoff or Backoff(retries=settings.connect_retries)
        self._conn: Connection | None = None
        self._shell: _Shell | None = None
        self._lock = threading.RLock()
        self.connects = 0       #: successful connects so far (a reconnect adds one)
        #: why commands run one exec channel each on this node (None: through the shell session)
        self.exec_reason: str | None = None if shell_session else "disabled"
        self.shells_started = 0  #: driver sessions started so far (one per connection normally)
        #: the process group (and its leader's start time) of a command that lost its result and
        #: may still run on the node: ended before the next command runs there (:meth:`_end_orphan`)
        self.orphan: tuple[int, str] | None = None
        #: why nothing more may run on this node (a lost step of a dead run that could not be ended)
        self.blocked: str | None = None

    # ------------------------------------------------------------------ connection

    @property
    def connection(self) -> Connection | None:
        """The live fabric Connection, if any (for tests and diagnostics)."""
        return self._conn

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.is_connected

    def open(self) -> None:
        """Connect (idempotent); retries transient failures, raises TransportError
        (:class:`~zdu.transport.base.BastionError` when a jump host fails)."""
        with self._lock:
            if self.connected:
                return
            self._discard()
            for note in self.target.notes:
                self.pool.warn(note, self.on_warning)
            target = self.target
            if target.sources.get("key_files") in (NODE, SSH):
                for path in target.key_files:
                    if not os.path.isfile(path):
                        raise AuthError(self.node.name, f"cannot log in to {self.user}@"
                                                        f"{self.address}: key file {path} "
                                                        "does not exist")
            attempts = [0]

            def attempt() -> Connection:
                attempts[0] += 1
                return self._connect_once()

            try:
                self._conn = retry_call(attempt, policy=self._backoff, retry_if=_is_transient,
                                        sleep=self._sleep, give_up=self.pool.give_up)
            except _Transient as exc:
                tries = f" (tried {attempts[0]} times)" if attempts[0] > 1 else ""
                raise UnreachableError(self.node.name, f"{exc.message}{tries}") from None
            self.connects += 1

    def close(self) -> None:
        """Close the connection (idempotent); jump-host connections nobody else uses close too."""
        with self._lock:
            self._discard()
            self.pool.release(self)

    @property
    def mode(self) -> str:
        """``"shell"`` (one long-lived shell per connection) or ``"exec"`` (a session per command)."""
        return "exec" if self.exec_reason else "shell"

    def _discard(self) -> None:
        self._drop_shell()
        conn, self._conn = self._conn, None
        if conn is not None:
            _close_quietly(conn)
            _close_quietly(conn.client)

    def _connect_once(self) -> Connection:
        target = self.target
        sock = None
        if target.jumps:
            sock = self.pool.open_channel(self, target.jumps, target.address, target.port,
                                          target.connect_timeout)
        # lazy=True: fabric reads no ssh_config or /etc/fabric.yml itself - the resolved
        # target (zdu.config.ssh_config) is what runs
        config = Config(lazy=True, overrides={"runners": {"remote": _Remote}})
        try:
            check = self._host_check(target, who=self.node.name,
                                     what=target.endpoint,
                                     pin_hint="host_key in the topology")
        except BaseException:
            _close_quietly(sock)
            raise
        made: list[Connection] = []

        def connect(kwargs: dict[str, Any]) -> None:
            conn = Connection(target.address, user=target.user, port=target.port, config=config,
                              connect_kwargs=kwargs)
            made.append(conn)
            # fabric installs AutoAddPolicy in Connection.__init__: replace it before connecting
            conn.client.set_missing_host_key_policy(_HostKeyGuard(check))
            conn.open()

        def close() -> None:
            for conn in made:
                _close_quietly(conn.client)
        self._handshake(target, sock, check, connect, close, who=self.node.name, where=self.address)
        conn = made[0]
        conn.transport.set_keepalive(KEEPALIVE)
        return conn

    def _open_client(self, target: ResolvedTarget, sock: Any, *, who: str, what: str,
                     pin_hint: str) -> paramiko.SSHClient:
        """A plain paramiko connection to ``target`` (a jump host), checked like a node."""
        try:
            check = self._host_check(target, who=who, what=what, pin_hint=pin_hint)
        except BaseException:
            _close_quietly(sock)
            raise
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(_HostKeyGuard(check))
        self._handshake(target, sock, check,
                        lambda kwargs: client.connect(target.address, port=target.port, username=target.user, **kwargs),
                        lambda: _close_quietly(client), who=who, where=target.endpoint)
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(KEEPALIVE)
        return client

    def _handshake(self, target: ResolvedTarget, sock: Any, check: _HostCheck,
                   connect: Callable[[dict[str, Any]], None], close: Callable[[], None], *,
                   who: str, where: str) -> None:
        """Connect to ``target`` over ``sock`` (a jump host's channel), else over a TCP
        connection made here: ``connect(kwargs)`` is fabric's or paramiko's connect given
        paramiko's keyword arguments.  The attempt counts with the pool as under way
        (:meth:`SshPool.abandon_connects` can cut it short) until it has logged in or failed;
        on failure ``close()`` runs, the socket is closed and the error is mapped."""
        with self.pool.tracked(_transport_factory(check.known.lookup(check.name))) as handshake:
            try:
                if sock is None:
                    sock = handshake.tcp_connect(target.address, target.port, target.connect_timeout)
                kwargs = self._connect_kwargs(target, sock)
                kwargs["transport_factory"] = handshake.factory
                connect(kwargs)
            except BaseException as exc:
                close()                  # quietly: a broken connection must not hide why
                _close_quietly(sock)
                if isinstance(exc, TransportError):
                    raise
                raise self._map_connect_error(exc, target, who=who, where=where,
                                              aborted=handshake.aborted) from None

    def _connect_kwargs(self, target: ResolvedTarget, sock: Any) -> dict[str, Any]:
        timeout = target.connect_timeout
        kwargs: dict[str, Any] = {
            # our own timeout, as a float: Connection(connect_timeout=) truncates to int
            "timeout": timeout, "banner_timeout": timeout, "auth_timeout": timeout,
            "channel_timeout": timeout,
            "look_for_keys": target.default_keys, "allow_agent": target.agent,
        }
        if target.key_files:
            kwargs["key_filename"] = list(target.key_files)
        if sock is not None:
            kwargs["sock"] = sock
        return kwargs

    # ------------------------------------------------------------------ host keys

    def _host_check(self, target: ResolvedTarget, *, who: str, what: str,
                    pin_hint: str) -> _HostCheck:
        try:
            known = self.pool.known_hosts(self.known_hosts, self.on_warning)
        except OSError as exc:
            raise HostKeyError(who, f"cannot read known_hosts file {self.known_hosts}: "
                                    f"{exc.strerror or exc}") from None

        def record(name: str, key: paramiko.PKey) -> None:
            _append_known_host(self.known_hosts, name, key)
            if self.on_host_key_accepted is not None:
                self.on_host_key_accepted(who if target is self.target else target.name,
                                          key.get_name(), key.fingerprint)
        return _HostCheck(who=who, what=what, name=_known_hosts_name(target.address, target.port),
                          known=known, policy=self.settings.host_key_policy,
                          pin=target.host_key, pin_hint=pin_hint, record=record)

    # ------------------------------------------------------------------ errors

    def _map_connect_error(self, exc: BaseException, target: ResolvedTarget, *, who: str,
                           where: str, aborted: bool = False) -> TransportError | "_Transient":
        """The error to raise for ``exc``; ``aborted``: the attempt was cut short, which says
        so (it is not retried) unless ``exc`` is an interrupt or an exit, which goes on."""
        timeout = target.connect_timeout
        user = target.user
        if aborted and isinstance(exc, Exception):
            return UnreachableError(who, f"the connect to {where} was given up: zdupgrade was interrupted")
        if isinstance(exc, BadHostKeyException):       # not expected: paramiko gets no keys
            return HostKeyError(who, f"HOST KEY CHANGED for {where}: expected "
                                     f"{exc.expected_key.fingerprint}, the server offered "
                                     f"{exc.key.fingerprint}",
                                expected=exc.expected_key.fingerprint, offered=exc.key.fingerprint)
        if isinstance(exc, PasswordRequiredException):
            keys = ", ".join(target.key_files) or "a default key"
            hint = ("" if target.agent else "; load it into an ssh-agent (ssh-add) and set "
                    "ssh.agent: true")
            return AuthError(who, f"cannot log in to {user}@{where}: key file {keys} is "
                                  f"encrypted and no passphrase was given{hint}")
        if isinstance(exc, AuthenticationException):
            detail = "timed out" if "timeout" in str(exc).lower() else "was refused"
            return AuthError(who, f"authentication as {user}@{where} with "
                                  f"{_keys_text(target)} {detail}")
        if isinstance(exc, SSHException) and "no authentication methods" in str(exc).lower():
            return AuthError(who, f"cannot log in to {user}@{where}: no key to offer (tried "
                                  f"{_keys_text(target)}; none was found)")
        if isinstance(exc, NoValidConnectionsError):
            codes = {getattr(e, "errno", None) for e in exc.errors.values()}
            what = "no route to host" if errno.EHOSTUNREACH in codes else "connection refused"
            return _Transient(f"cannot connect to {where}: {what}")
        if isinstance(exc, socket.gaierror):
            return UnreachableError(who, f"cannot resolve host name {target.address!r} "
                                         f"({exc.strerror or exc})")
        if isinstance(exc, (socket.timeout, TimeoutError)):
            return _Transient(f"cannot connect to {where}: no answer within {timeout:g} s")
        if isinstance(exc, SSHException) and ("banner" in str(exc).lower()
                                              or "no existing session" in str(exc).lower()):
            # "No existing session": paramiko's start_client gave up after `timeout`
            # with the key exchange unfinished, i.e. the same thing, slower
            return _Transient(f"connected to {where} but no SSH banner / handshake within "
                              f"{timeout:g} s (sshd overloaded, or not an SSH server)")
        if isinstance(exc, (EOFError, ConnectionError)):
            return _Transient(f"connection to {where} was closed during the SSH handshake")
        if isinstance(exc, OSError):
            if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
                return _Transient(f"cannot connect to {where}: no route to host")
            return UnreachableError(who, f"cannot connect to {where}: "
                                         f"{exc.strerror or exc.__class__.__name__}")
        if isinstance(exc, SSHException):
            return UnreachableError(who, f"SSH connection to {where} failed: {exc}")
        if isinstance(exc, Exception):
            return UnreachableError(who, f"cannot connect to {where}: "
                                         f"{exc.__class__.__name__}: {exc}")
        raise exc                       # KeyboardInterrupt and friends

    # ------------------------------------------------------------------ commands

    def run(self, command: str, *, timeout: float | None = None,
            env: dict[str, str] | None = None) -> CommandResult:
        """Run ``command`` through the node's login shell; see the module docstring.

        Returns a result for every command that was sent (exit code, timeout, or
        ``error="unreachable"`` if the connection died under it).  Raises
        :class:`TransportError` when the node cannot be reached or the command
        cannot be started.  ``env`` values are exported (shell-quoted) before it.
        """
        limit = timeout or self.settings.command_timeout
        remote_command = self._sendable(command, env)
        with self._lock:
            if self.blocked is not None:
                raise UnreachableError(self.node.name, self.blocked)
            if self.orphan is not None:
                self._end_orphan()
            if self.exec_reason is None and len(remote_command) <= SHELL_COMMAND_MAX:
                result = self._run_in_shell(command, remote_command, limit, (env or {}).get(STEP_TAG))
                if result is not None:
                    return result
            return self._run_exec(command, remote_command, limit, (env or {}).get(STEP_TAG))

    def _run_exec(self, command: str, remote_command: str, limit: float,
                  tag: str | None = None) -> CommandResult:
        """One exec channel for ``command`` (the fallback, and the way before the shell session);
        with ``tag`` (a run's step) the command notes it for a resume
        (:func:`~zdu.transport.shell.exec_step_note`)."""
        for attempt in (1, 2):
            self.open()
            conn = self._conn
            assert conn is not None
            runner = _Remote(context=conn, inline_env=True)
            runner.start_timeout = limit
            runner.step_tag = tag
            started, t0 = time.time(), time.monotonic()
            try:
                result = runner.run(remote_command, hide=True, warn=True, in_stream=False,
                                    pty=False, timeout=limit, encoding="utf-8")
            except CommandTimedOut as exc:
                if runner.pgid and not runner.exit_seen:
                    self.orphan = (runner.pgid, runner.leader_start)   # the kill did not get through
                stderr = exc.result.stderr
                if runner.held_open is not None:
                    stderr += _held_open_note(runner.held_open[0], runner.held_open[1] - t0)
                return CommandResult(command, None, exc.result.stdout, stderr,
                                     started, time.monotonic() - t0, error="timeout")
            except (SSHException, EOFError, OSError, ThreadException) as exc:
                if runner.start_expired:
                    # the node never answered the exec request: a timeout, and the
                    # connection is useless now (the next run() reconnects)
                    self._discard()
                    return CommandResult(command, None, "", "", started,
                                         time.monotonic() - t0, error="timeout")
                if runner.command_sent:
                    return self._lost(command, runner, started, t0)
                # the session could not even be opened: the connection we thought
                # we had is dead; reconnect once and try again
                self._discard()
                if attempt == 2:
                    raise UnreachableError(
                        self.node.name, f"cannot start a command on {self.address}: "
                        f"{_plain(exc)}") from None
                continue
            if runner.channel.exit_status == -1:
                # the channel closed without an exit status: the connection died
                return self._lost(command, runner, started, t0,
                                  result.stdout, result.stderr)
            stderr = result.stderr if runner.began else runner.not_started()
            return CommandResult(command, result.exited, result.stdout, stderr,
                                 started, time.monotonic() - t0)
        raise AssertionError("unreachable")  # pragma: no cover

    # ------------------------------------------------------------------ the shell session

    def _run_in_shell(self, command: str, remote_command: str, limit: float,
                      tag: str | None = None) -> CommandResult | None:
        """Run ``command`` through the node's shell session (started if needed); None when the
        session cannot run on this node (nothing ran: the caller falls back to exec)."""
        started, t0 = time.time(), time.monotonic()
        for attempt in (1, 2):
            shell = self._shell
            if shell is None or not shell.alive:
                self._drop_shell()
                got = self._start_shell(limit)
                if got is None:
                    return None
                if got == "timeout":
                    return CommandResult(command, None, "", "", started, time.monotonic() - t0,
                                         error="timeout")
                assert isinstance(got, _Shell)
                shell = self._shell = got
            if time.monotonic() - shell.last_heard > LIVE_WINDOW and \
                    not _answers(shell.chan.get_transport(), min(limit, self.target.connect_timeout)):
                # the node is silent: nothing was sent; reconnect once (which fails the same way
                # if it is gone)
                self._discard()
                if attempt == 2:
                    raise UnreachableError(self.node.name, f"{self.address} does not answer; the "
                                                           "command was not sent")
                continue
            nonce = secrets.token_hex(8)
            try:
                shell.chan.sendall(frame(nonce, remote_command, tag))
            except (SSHException, EOFError, OSError):
                if shell.sent_nothing():
                    # the session had ended while idle (nothing of this command went out)
                    self._drop_shell()
                    if attempt == 1:
                        continue
                return self._shell_lost(command, "", "", started, t0)
            return self._collect(shell, command, nonce, limit, started, t0)
        raise AssertionError("unreachable")  # pragma: no cover

    def _start_shell(self, limit: float) -> "_Shell | str | None":
        """A running driver on a new session channel; ``"timeout"`` when the node did not
        answer within ``limit`` (the connection is dropped); None when the driver cannot run
        there (noted once; the handler uses exec channels from now on)."""
        for attempt in (1, 2):
            self.open()
            conn = self._conn
            assert conn is not None
            dir_id = secrets.token_hex(8)
            command = driver_command(dir_id, self.driver_shell)
            try:
                chan = conn.transport.open_session(timeout=min(limit, self.target.connect_timeout))
                # the login shell's rc files run first: not the command's time, but bounded
                deadline = time.monotonic() + max(limit, 2 * self.target.connect_timeout, SHELL_START)
                answered = _bounded(chan, lambda: chan.exec_command(command), limit)
            except (SSHException, EOFError, OSError) as exc:
                # the connection we thought we had is dead: reconnect once and try again
                self._discard()
                if attempt == 2:
                    raise UnreachableError(self.node.name, f"cannot start a command on "
                                                           f"{self.address}: {_plain(exc)}") from None
                continue
            if not answered:
                self._discard()
                return "timeout"
            shell = _Shell(chan)
            answer = shell.wait_ready(deadline, dir_id)
            if answer == "ready":
                self.shells_started += 1
                return shell
            _close_quietly(chan)
            if answer == "timeout":
                self._discard()
                return "timeout"
            if answer == "lost" and not self.connected:
                self._discard()
                if attempt == 2:
                    raise UnreachableError(self.node.name, f"the connection to {self.address} "
                                                           "closed while starting a command")
                continue
            self.exec_reason = answer
            self.pool.note_exec_fallback(self.node.name, answer, self.on_warning)
            return None
        raise AssertionError("unreachable")  # pragma: no cover

    def _drop_shell(self) -> None:
        shell, self._shell = self._shell, None
        if shell is not None:
            _close_quietly(shell.chan)

    def _collect(self, shell: "_Shell", command: str, nonce: str, limit: float,
                 started: float, t0: float) -> CommandResult:
        """Read the command's output and records until both streams end; on timeout kill its
        process group (TERM, a grace, KILL) from a second session, as for an exec channel."""
        state = StepState(nonce)
        out, err = OutputCapture(), OutputCapture()
        reader = _Reader(shell, nonce, out, err, state)
        deadline = time.monotonic() + limit        # the command's own time, as for exec
        if not reader.until(lambda: state.done, deadline):
            if reader.lost:
                return self._shell_lost(command, out.text(), err.text(), started, t0,
                                        (state.pgid, state.leader_start) if state.pgid else None)
            self._kill(shell, reader, state)
            stderr = err.text()
            if state.exited_at is not None and state.exited_at < deadline:
                stderr += _held_open_note(state.exit_code, state.exited_at - t0)
            return CommandResult(command, None, out.text(), stderr, started,
                                 time.monotonic() - t0, error="timeout")
        return CommandResult(command, state.exit_code, out.text(), err.text(), started,
                             time.monotonic() - t0)

    def _kill(self, shell: "_Shell", reader: "_Reader", state: StepState) -> None:
        """The command timed out: end it (its group, then the forwarders if something outside
        the group holds its output); a session that still does not finish it is closed."""
        transport = shell.chan.get_transport()
        if state.pgid is None:       # sent, but not started yet (a slow node): a moment more
            reader.until(lambda: state.pgid is not None or state.done, time.monotonic() + KILL_GRACE)
        if state.done:
            return
        if state.pgid:
            plan = [f"kill -TERM -{state.pgid}", f"kill -KILL -{state.pgid}"]
            if state.forwarders:
                plan.append("kill -KILL " + " ".join(map(str, state.forwarders)))
            for kill in plan:
                if not _side_command(transport, kill + " 2>/dev/null"):
                    break              # the node does not answer: nothing more gets through
                if reader.until(lambda: state.done, time.monotonic() + KILL_GRACE):
                    return
                if reader.lost:
                    break
        # not finished (or its group never reported): this session is of no further use, and
        # the command may still run on the node
        if state.pgid:
            self.orphan = (state.pgid, state.leader_start)
        self._drop_shell()

    def _shell_lost(self, command: str, stdout: str, stderr: str, started: float,
                    t0: float, group: tuple[int, str] | None = None) -> CommandResult:
        """The session ended under a command: the connection died (or the driver was killed).
        The command itself may go on running on the node (``group``: its process group and
        the leader's start time)."""
        self.orphan = group or self.orphan
        self._drop_shell()
        if not self.connected:
            self._discard()                      # the next run() reconnects
        return CommandResult(command, None, stdout, stderr, started, time.monotonic() - t0,
                             error="unreachable")

    def _end_orphan(self) -> None:
        """A command here lost its result (the connection died under it, or its timeout could
        not kill it) and may still be running: end its process group -- if it is still that
        command's (:data:`~zdu.transport.shell.END_ORPHAN`) -- before anything else runs on
        the node: a rollback beside a still-running upgrade step would leave the node on
        whichever finished last.  When the node cannot be reached, that error is raised as it
        is; when the group cannot be ended, UnreachableError says so.  Either way nothing more
        runs, and the group stays noted for the next try."""
        orphan = self.orphan
        assert orphan is not None
        pgid, start = orphan
        self.orphan = None
        try:
            code = self._end_script(END_ORPHAN, pgid=int(pgid), start=shlex.quote(start))
        except TransportError:
            self.orphan = orphan
            raise
        if code not in (0, 3):
            self.orphan = orphan
            raise UnreachableError(self.node.name, f"a command whose result was lost may still be "
                                                   f"running on the node (process group {pgid}) and "
                                                   f"could not be ended ({_end_failed(code)}); nothing "
                                                   "more was run there")
        if code == 3:
            self.pool.warn(f"{self.node.name}: a command that lost its connection (or that its "
                           f"timeout could not end) was still running on the node, process "
                           f"group {pgid}; it was ended before anything else ran there", self.on_warning)

    def end_lost_step(self, tag: str) -> bool | None:
        """The step ``tag`` (``run-id/step-key``) of a run that died may still be running on the
        node, under a driver or in an exec channel that lost its connection: end it (see
        :data:`~zdu.transport.shell.END_LOST_STEP`).  True when it was running and was ended,
        False when it is not running, None when this node cannot tell (no /proc).  When it cannot be ended, or the node does not answer, nothing more is run on
        this node (UnreachableError now, and for every later command)."""
        with self._lock:
            try:
                if self.orphan is not None:
                    self._end_orphan()
                code = self._end_script(END_LOST_STEP, tag=shlex.quote(tag))
            except TransportError as exc:
                code, why = None, exc.detail
            else:
                if code in (0, 3):
                    return code == 3
                if code == 5:
                    return None                   # no /proc: cannot tell
                why = _end_failed(code)
            self.blocked = (f"step {tag} of the run that died may still be running on the node and "
                            f"could not be ended ({why}); nothing more is run there")
            raise UnreachableError(self.node.name, self.blocked)

    def _end_script(self, template: str, **values: Any) -> int | None:
        """Run one of the end-a-group scripts: its exit code; None when its result was lost
        (the connection died, a timeout).  TransportError when the node cannot be reached."""
        script = template.format(kill_at=int(KILL_GRACE * 10) + 1, give_up=int(KILL_GRACE * 20) + 2, **values)
        limit = KILL_GRACE * 2 + max(5.0, self.target.connect_timeout)
        result = self._run_in_shell(script, script, limit) if self.exec_reason is None else None
        if result is None:
            result = self._run_exec(script, script, limit)
        return result.exit_code

    def _sendable(self, command: str, env: dict[str, str] | None) -> str:
        """``command`` with ``env`` exported, or InvalidCommandError (never quoting the
        command or a value: either may hold a secret)."""
        for name, value in (env or {}).items():
            if not _ENV_NAME.match(str(name)):
                raise InvalidCommandError(self.node.name, f"invalid environment variable "
                                                          f"name {str(name)[:64]!r}; nothing ran")
            _encodable(self.node.name, str(value), f"environment variable {name}")
        _encodable(self.node.name, command, "the command")
        return _with_env(command, env)

    def _lost(self, command: str, runner: _Remote, started: float, t0: float,
              stdout: str | None = None, stderr: str | None = None) -> CommandResult:
        if stdout is None:
            stdout = "".join(getattr(runner, "stdout", []) or [])
            stderr = "".join(getattr(runner, "stderr", []) or [])
        if runner.pgid:                          # it may go on running on the node
            self.orphan = (runner.pgid, runner.leader_start)
        self._discard()                          # the next run() reconnects
        return CommandResult(command, None, stdout, stderr or "", started,
                             time.monotonic() - t0, error="unreachable")


# --------------------------------------------------------------------------- the shell session

class _Wakeup:
    """Wakes whoever reads a shell session when anything reaches its channel: data on stdout or
    on stderr, either stream's end, the channel closing.

    paramiko's select-able pipe (``Channel.fileno``) is set by stdout data only, so a reader
    that had drained both streams and then waited on it for the driver's last stderr record
    (its ``end``, which can arrive in a packet of its own after stdout's) slept to its poll cap
    -- now and then a command took a second longer than it ran.  Both buffers call this object
    (their ``set_event``); only the reader clears it, before it drains, so nothing that arrives
    after a drain can go unnoticed (a wake-up for data already drained is harmless)."""

    def __init__(self, chan: paramiko.Channel) -> None:
        self._event = threading.Event()
        chan.in_buffer.set_event(self)
        chan.in_stderr_buffer.set_event(self)

    def set(self) -> None:
        """Called by paramiko: something arrived."""
        self._event.set()

    def clear(self) -> None:
        """Called by paramiko when one buffer is empty; the other may not be: only ``arm`` clears."""

    def arm(self) -> None:
        """Forget earlier wake-ups: call before draining the channel."""
        self._event.clear()

    def wait(self, seconds: float) -> bool:
        """Until something arrived since :meth:`arm` or ``seconds`` passed: True if it did."""
        return self._event.wait(seconds)


class _Shell:
    """A session channel running the driver (:mod:`zdu.transport.shell`)."""

    def __init__(self, chan: paramiko.Channel) -> None:
        self.chan = chan
        self.wakeup = _Wakeup(chan)
        self.last_heard = time.monotonic()     #: when the node last sent something on it

    @property
    def alive(self) -> bool:
        chan = self.chan
        transport = chan.get_transport()
        return (not chan.closed and not chan.eof_received and not chan.exit_status_ready()
                and transport is not None and transport.is_active())

    def sent_nothing(self) -> bool:
        """True when a failed send cannot have reached the node (the channel was closed)."""
        return self.chan.closed

    def wait_ready(self, deadline: float, dir_id: str) -> str:
        """``"ready"``, ``"timeout"``, ``"lost"``, or why the driver cannot run here.  Ready once
        the driver said so with ``dir_id`` on both streams: everything the login shell wrote
        before (rc files' banners, a motd on stderr) is dropped, not given to the first step."""
        chan = self.chan
        ready, ready_err = RecordSplitter(b"zdu-driver:"), RecordSplitter(b"zdu-driver:")
        errors = bytearray()
        mine = f"ready={dir_id}"
        while True:
            self.wakeup.arm()
            while chan.recv_ready():
                data = chan.recv(65536)
                if not data:
                    break
                ready.feed(data)
            while chan.recv_stderr_ready() and mine not in ready_err.records:
                data = chan.recv_stderr(65536)
                if not data:
                    break
                errors += ready_err.feed(data)[: max(0, 4096 - len(errors))]
            for record in ready.records:
                if record == mine and mine in ready_err.records:
                    return "ready"
                if record.startswith("missing="):
                    return f"{record[len('missing='):]} not found there"
            if chan.closed or chan.eof_received or chan.exit_status_ready():
                transport = chan.get_transport()
                if transport is None or not transport.is_active():
                    return "lost"
                text = bytes(errors).decode("utf-8", "replace").strip()
                first = text.splitlines()[0][:200] if text else f"exit {chan.recv_exit_status()}"
                return f"the shell session ended at once: {first}"
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "timeout"
            self.wakeup.wait(min(remaining, 1.0))


class _Reader:
    """Reads one command's output from a shell session channel into the captures, taking the
    driver's records out of both streams."""

    def __init__(self, shell: _Shell, nonce: str, out: OutputCapture, err: OutputCapture,
                 state: StepState) -> None:
        self.shell = shell
        self.chan = chan = shell.chan
        self.out, self.err, self.state = out, err, state
        self._out = RecordSplitter(f"{nonce}:".encode())
        self._err = RecordSplitter(f"{nonce}:".encode())
        self.lost = False

    def _drain(self) -> None:
        chan = self.chan
        heard = False
        while chan.recv_ready():
            data = chan.recv(65536)
            if not data:
                break
            heard = True
            self.out.feed(self._out.feed(data))
        while chan.recv_stderr_ready():
            data = chan.recv_stderr(65536)
            if not data:
                break
            heard = True
            self.err.feed(self._err.feed(data))
        if heard:
            self.shell.last_heard = time.monotonic()
        for splitter in (self._out, self._err):
            for record in splitter.records:
                self.state.apply(record)
            splitter.records.clear()

    def until(self, done: Callable[[], bool], deadline: float) -> bool:
        """Read until ``done()`` (True) or ``deadline`` or the session ends (False; ``lost``)."""
        chan = self.chan
        while True:
            self.shell.wakeup.arm()
            self._drain()
            if done():
                return True
            if chan.closed or chan.eof_received or chan.exit_status_ready():
                self._drain()
                if done():
                    return True
                self.lost = True
                self.out.feed(self._out.flush())
                self.err.feed(self._err.flush())
                return False
            transport = chan.get_transport()
            if transport is None or not transport.is_active():
                self.lost = True
                return False
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.shell.wakeup.wait(min(remaining, 1.0))


# --------------------------------------------------------------------------- helpers

def _bounded(chan: paramiko.Channel, request: Callable[[], None], seconds: float | None) -> bool:
    """Make ``request`` (which waits for the node's answer on ``chan``) give up after
    ``seconds`` by closing ``chan`` (that wakes paramiko's wait, which then raises);
    False when it had to."""
    if seconds is None:
        request()
        return True
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        try:
            chan.close()
        except (EOFError, OSError, paramiko.SSHException):
            pass  # the connection is already gone: the waiting request fails on its own
    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        request()
    except Exception:
        if expired.is_set():
            return False
        raise
    finally:
        timer.cancel()
    return not expired.is_set()


def _answers(transport: paramiko.Transport | None, seconds: float) -> bool:
    """True when the SSH server answers a global request within ``seconds`` (OpenSSH refuses a
    request it does not know: the refusal is the answer).  paramiko's own ``global_request``
    waits without a bound."""
    if transport is None or not transport.is_active():
        return False
    event = threading.Event()
    transport.completion_event = event
    m = paramiko.Message()
    m.add_byte(bytes([MSG_GLOBAL_REQUEST]))
    m.add_string("keepalive@openssh.com")
    m.add_boolean(True)
    try:
        transport._send_user_message(m)  # type: ignore[attr-defined]
    except (SSHException, EOFError, OSError):
        return False
    return event.wait(seconds)


class _Transient(Exception):
    """A connect failure worth retrying (refused, timeout, reset during handshake)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, _Transient)


def _known_hosts_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def _normalise_fingerprint(text: str) -> str:
    text = text.strip()
    if text.upper().startswith("SHA256:"):
        text = "SHA256:" + text[7:]
    return text.rstrip("=")


def _with_env(command: str, env: dict[str, str] | None) -> str:
    if not env:
        return command
    for name in env:
        if not _ENV_NAME.match(name):
            raise ValueError(f"invalid environment variable name {name!r}")
    exports = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in sorted(env.items()))
    return f"export {exports}\n{command}"


def _close_quietly(thing: Any) -> None:
    """Close a connection, client or channel that may be broken already (never raises)."""
    if thing is None:
        return
    try:
        thing.close()
    except Exception:  # noqa: BLE001 - closing a broken connection must not fail
        pass


def _encodable(node: str, text: str, what: str) -> None:
    if "\x00" in text:
        raise InvalidCommandError(node, f"{what} holds a NUL byte (character "
                                        f"{text.index(chr(0))}), which no shell can receive; "
                                        "nothing ran")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidCommandError(
            node, f"{what} cannot be sent: character {exc.start} is not valid Unicode text "
                  f"(U+{ord(text[exc.start]):04X}, a byte that was not UTF-8 in its source, such "
                  "as an environment variable, a file name or a file read without UTF-8); "
                  "nothing ran") from None


def _plain(exc: BaseException) -> str:
    text = str(exc).strip() or exc.__class__.__name__
    return text.splitlines()[0]
