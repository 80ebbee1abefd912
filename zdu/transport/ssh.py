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

Command timeout: the remote process group of the command gets SIGTERM, then SIGKILL
after a one-second grace, then the channel is closed.  To know that group, every
command is preceded by one ``printf`` that writes the shell's ``$$`` to stderr
(sshd makes each session command a session leader, so that is its process group);
the line is stripped from stderr before anyone sees it.  The kill is a
``kill -SIG -- -PGID`` run in a second session on the same connection (the SSH
``signal`` request is only a fallback when the group is unknown: OpenSSH refuses it
for root logins, which skip privilege separation).  The result is ``exit_code=None,
error="timeout"`` with the output so far.  A command killed
by a signal otherwise reports ``128 + signal number`` as its exit code, like a shell.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import shlex
import signal as _signal
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable

import paramiko
from fabric import Config, Connection
from fabric.runners import Remote
from invoke.exceptions import CommandTimedOut, ThreadException
from paramiko.common import MSG_CHANNEL_REQUEST
from paramiko.ssh_exception import (AuthenticationException, BadHostKeyException,
                                    NoValidConnectionsError, PasswordRequiredException,
                                    SSHException)

from zdu.errors import AuthError, HostKeyError, TransportError, UnreachableError
from zdu.model import CommandResult, Node, SshSettings
from zdu.transport.base import CommandHandler
from zdu.transport.local import IncrementalDecodeMixin, TimeoutKillMixin
from zdu.transport.retry import Backoff, Sleep, retry_call

HostKeyCallback = Callable[[str, str, str], None]

#: grace between SIGTERM and SIGKILL for a timed-out remote command
KILL_GRACE = 1.0
#: seconds between keepalives on an idle connection
KEEPALIVE = 15

# paramiko logs the failures we map and report ourselves (with tracebacks, at ERROR); with no
# logging configured they would land on stderr through logging's last-resort handler
logging.getLogger("paramiko").addHandler(logging.NullHandler())

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_known_hosts_lock = threading.Lock()


# --------------------------------------------------------------------------- paramiko glue

def _handle_channel_request(chan: paramiko.Channel, m: paramiko.Message) -> None:
    """paramiko ignores ``exit-signal``; record it as ``128 + signum`` like a shell does."""
    start = m.packet.tell()
    key = m.get_text()
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


#: first line the wrapper writes to stderr: the command's process group id.  sshd
#: runs every session command as a session leader (setsid), so ``$$`` of the shell
#: is the process group of the command and of everything it starts.
_PGID_MARK = b"\x1ezdu-pgid="


class _Remote(TimeoutKillMixin, IncrementalDecodeMixin, Remote):
    """Fabric's Remote runner with a real kill, stdin closed, and "did it start" tracking."""

    command_sent = False
    pgid: int | None = None
    _kill_wait = KILL_GRACE * 2 + 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stderr_head: bytes | None = b""

    #: seconds to wait for the node to answer the exec request (None: forever)
    start_timeout: float | None = None
    #: the node did not answer the exec request within start_timeout
    start_expired = False

    def send_start_message(self, command: str) -> None:
        wrapped = f"printf '\\036zdu-pgid=%s\\n' \"$$\" >&2\n{command}"
        # paramiko waits for the answer to an exec request without any timeout, and invoke's
        # command timer starts only after it: a node that freezes right then (paused, link
        # gone silent) would hang the run for good
        if not _bounded(self.channel, lambda: super(_Remote, self).send_start_message(wrapped),
                        self.start_timeout):
            self.start_expired = True
            raise SSHException(f"no answer to the exec request within {self.start_timeout:g}s")
        self.command_sent = True
        # we never feed stdin: give the command EOF instead of a pipe that never ends
        self.channel.shutdown_write()

    def read_proc_stderr(self, num_bytes: int) -> bytes:
        # strip (and remember) the pgid line the wrapper writes before the command runs
        while self._stderr_head is not None:
            data = self.channel.recv_stderr(num_bytes)
            head = self._stderr_head + data
            if data and b"\n" not in head and len(head) < 64:
                self._stderr_head = head
                continue
            self._stderr_head = None
            rest = head
            if head.startswith(_PGID_MARK) and b"\n" in head:
                line, rest = head.split(b"\n", 1)
                digits = line[len(_PGID_MARK):]
                self.pgid = int(digits) if digits.isdigit() else None
            if rest or not data:
                return rest
        return self.channel.recv_stderr(num_bytes)

    def _terminate(self) -> None:
        chan = self.channel
        for name in ("TERM", "KILL"):
            if chan.closed or chan.status_event.is_set():
                break
            if self.pgid:
                # root sessions are not privilege-separated and OpenSSH refuses the
                # "signal" request for them, so signal the group from a second session
                if not self._side_command(f"kill -{name} -- -{self.pgid} 2>/dev/null"):
                    break        # the node does not answer: a KILL would not get through either
            else:
                # fallback: a "signal" request races with the channel closing, and
                # sshd drops the whole connection on a request for a closed channel;
                # the next run() would then reconnect
                try:
                    _send_signal(chan, name)
                except Exception:  # noqa: BLE001 - the connection may be gone already
                    break
            chan.status_event.wait(KILL_GRACE)
        chan.close()

    def _side_command(self, command: str) -> bool:
        """Run ``command`` in a second session; False if the node did not even answer."""
        try:
            side = self.channel.transport.open_session(timeout=KILL_GRACE * 5)
            try:
                if not _bounded(side, lambda: side.exec_command(command), KILL_GRACE * 5):
                    return False
                side.status_event.wait(KILL_GRACE * 5)
            finally:
                side.close()
        except Exception:  # noqa: BLE001 - best effort; the channel close follows
            return False
        return True


class _HostKeyGuard(paramiko.MissingHostKeyPolicy):
    """Called by paramiko, before authentication, for a key not in known_hosts."""

    def __init__(self, handler: "SshHandler") -> None:
        self.handler = handler

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        h = self.handler
        if h.node.host_key:
            h._check_pin(key)
            return                              # a matching pin is trust enough
        if h.settings.host_key_policy != "accept-new":
            raise HostKeyError(
                h.node.name,
                f"host key for {h.address} is not known: the server offered "
                f"{key.get_name()} {key.fingerprint}, which is not in {h.known_hosts} "
                f"(host_key_policy is strict). Check the fingerprint on the node, then add "
                f"it to {h.known_hosts} or pin it as host_key in the topology.",
                offered=key.fingerprint)
        h._remember_host_key(hostname, key)
        client.get_host_keys().add(hostname, key.get_name(), key)


# --------------------------------------------------------------------------- the handler

class SshHandler(CommandHandler):
    """Runs commands on one node over one reused SSH connection.

    :param node: the node; ``node.user`` (or ``settings.user``), ``node.port``,
        ``node.host_key`` (pinned ``SHA256:...`` fingerprint) are honoured.
    :param settings: key file, known_hosts file, host-key policy, timeouts, retries.
    :param on_host_key_accepted: called as ``(node_name, key_type, fingerprint)``
        when ``accept-new`` trusts and records a new host key.
    :param sleep: the backoff's sleep (tests pass a fake).
    :param backoff: the retry policy for transient connect failures; by default
        ``Backoff(retries=settings.connect_retries)`` (0.5 s, 1 s, 2 s, ... capped at 8 s).
    """

    def __init__(self, node: Node, settings: SshSettings, *,
                 on_host_key_accepted: HostKeyCallback | None = None,
                 sleep: Sleep = time.sleep, backoff: Backoff | None = None) -> None:
        super().__init__(node)
        self.settings = settings
        self.on_host_key_accepted = on_host_key_accepted
        self.user = node.user or settings.user
        self.address = f"{node.host}:{node.port}"
        self.known_hosts = Path(os.path.expanduser(settings.known_hosts or "~/.ssh/known_hosts"))
        self.key_file = os.path.expanduser(settings.key_file) if settings.key_file else None
        self._sleep = sleep
        self._backoff = backoff or Backoff(retries=settings.connect_retries)
        self._conn: Connection | None = None
        self._lock = threading.RLock()
        self.connects = 0       #: successful connects so far (a reconnect adds one)

    # ------------------------------------------------------------------ connection

    @property
    def connection(self) -> Connection | None:
        """The live fabric Connection, if any (for tests and diagnostics)."""
        return self._conn

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.is_connected

    def open(self) -> None:
        """Connect (idempotent); retries transient failures, raises TransportError."""
        with self._lock:
            if self.connected:
                return
            self._discard()
            if self.key_file and not os.path.isfile(self.key_file):
                raise AuthError(self.node.name, f"cannot log in to {self.user}@{self.address}: "
                                                f"key file {self.key_file} does not exist")
            attempts = [0]

            def attempt() -> Connection:
                attempts[0] += 1
                return self._connect_once()

            try:
                self._conn = retry_call(attempt, policy=self._backoff,
                                        retry_if=_is_transient, sleep=self._sleep)
            except _Transient as exc:
                tries = f" (tried {attempts[0]} times)" if attempts[0] > 1 else ""
                raise UnreachableError(self.node.name, f"{exc.message}{tries}") from None
            self.connects += 1

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            self._discard()

    def _discard(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing a broken connection must not fail
                pass
            conn.client.close()

    def _connect_kwargs(self) -> dict[str, Any]:
        timeout = self.settings.connect_timeout
        kwargs: dict[str, Any] = {
            # our own timeout, as a float: Connection(connect_timeout=) truncates to int
            "timeout": timeout, "banner_timeout": timeout, "auth_timeout": timeout,
            "channel_timeout": timeout, "transport_factory": _Transport,
        }
        if self.key_file:
            kwargs.update(key_filename=[self.key_file], look_for_keys=False, allow_agent=False)
        return kwargs

    def _connect_once(self) -> Connection:
        # lazy=True: no ~/.ssh/config, no /etc/fabric.yml - what the topology says is what runs
        config = Config(lazy=True, overrides={"runners": {"remote": _Remote}})
        conn = Connection(self.node.host, user=self.user, port=self.node.port, config=config,
                          connect_kwargs=self._connect_kwargs())
        client = conn.client
        # fabric installs AutoAddPolicy in Connection.__init__: replace it before connecting
        client.set_missing_host_key_policy(_HostKeyGuard(self))
        if self.known_hosts.is_file():
            # "system" host keys are never saved back by paramiko
            client.load_system_host_keys(str(self.known_hosts))
        try:
            conn.open()
            server_key = conn.transport.get_remote_server_key()
            if self.node.host_key:
                self._check_pin(server_key)
        except BaseException as exc:
            client.close()
            if isinstance(exc, TransportError):
                raise
            raise self._map_connect_error(exc) from None
        conn.transport.set_keepalive(KEEPALIVE)
        return conn

    # ------------------------------------------------------------------ host keys

    def _check_pin(self, key: paramiko.PKey) -> None:
        expected = _normalise_fingerprint(self.node.host_key or "")
        if _normalise_fingerprint(key.fingerprint) != expected:
            raise HostKeyError(
                self.node.name,
                f"host key for {self.address} does not match the pinned fingerprint: "
                f"expected {self.node.host_key}, the server offered "
                f"{key.get_name()} {key.fingerprint}. Refusing to connect.",
                expected=self.node.host_key, offered=key.fingerprint)

    def _remember_host_key(self, hostname: str, key: paramiko.PKey) -> None:
        line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
        path = self.known_hosts
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
        if self.on_host_key_accepted is not None:
            self.on_host_key_accepted(self.node.name, key.get_name(), key.fingerprint)

    # ------------------------------------------------------------------ errors

    def _map_connect_error(self, exc: BaseException) -> TransportError | "_Transient":
        name, where = self.node.name, self.address
        timeout = self.settings.connect_timeout
        if isinstance(exc, BadHostKeyException):
            offered, expected = exc.key, exc.expected_key
            return HostKeyError(
                name,
                f"HOST KEY CHANGED for {where}: {self.known_hosts} expects "
                f"{expected.get_name()} {expected.fingerprint} but the server offered "
                f"{offered.get_name()} {offered.fingerprint}. Either the node was "
                f"reinstalled or someone is intercepting the connection; if the change is "
                f"expected, remove the old entry (ssh-keygen -R "
                f"{shlex.quote(_known_hosts_name(self.node.host, self.node.port))} "
                f"-f {self.known_hosts}).",
                expected=expected.fingerprint, offered=offered.fingerprint)
        if isinstance(exc, PasswordRequiredException):
            return AuthError(name, f"cannot log in to {self.user}@{where}: key file "
                                   f"{self.key_file} is encrypted and no passphrase was given")
        if isinstance(exc, AuthenticationException):
            how = f"key {self.key_file}" if self.key_file else "the available keys"
            detail = "timed out" if "timeout" in str(exc).lower() else "was refused"
            return AuthError(name, f"authentication as {self.user}@{where} with {how} {detail}")
        if isinstance(exc, NoValidConnectionsError):
            codes = {getattr(e, "errno", None) for e in exc.errors.values()}
            what = "no route to host" if errno.EHOSTUNREACH in codes else "connection refused"
            return _Transient(f"cannot connect to {where}: {what}")
        if isinstance(exc, socket.gaierror):
            return UnreachableError(name, f"cannot resolve host name {self.node.host!r} "
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
            return UnreachableError(name, f"cannot connect to {where}: "
                                          f"{exc.strerror or exc.__class__.__name__}")
        if isinstance(exc, SSHException):
            return UnreachableError(name, f"SSH connection to {where} failed: {exc}")
        if isinstance(exc, Exception):
            return UnreachableError(name, f"cannot connect to {where}: "
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
        remote_command = _with_env(command, env)
        with self._lock:
            for attempt in (1, 2):
                self.open()
                conn = self._conn
                assert conn is not None
                runner = _Remote(context=conn, inline_env=True)
                runner.start_timeout = limit
                started, t0 = time.time(), time.monotonic()
                try:
                    result = runner.run(remote_command, hide=True, warn=True, in_stream=False,
                                        pty=False, timeout=limit, encoding="utf-8")
                except CommandTimedOut as exc:
                    return CommandResult(command, None, exc.result.stdout, exc.result.stderr,
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
                return CommandResult(command, result.exited, result.stdout, result.stderr,
                                     started, time.monotonic() - t0)
        raise AssertionError("unreachable")  # pragma: no cover

    def _lost(self, command: str, runner: _Remote, started: float, t0: float,
              stdout: str | None = None, stderr: str | None = None) -> CommandResult:
        if stdout is None:
            stdout = "".join(getattr(runner, "stdout", []) or [])
            stderr = "".join(getattr(runner, "stderr", []) or [])
        self._discard()                          # the next run() reconnects
        return CommandResult(command, None, stdout, stderr or "", started,
                             time.monotonic() - t0, error="unreachable")


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


def _plain(exc: BaseException) -> str:
    text = str(exc).strip() or exc.__class__.__name__
    return text.splitlines()[0]
