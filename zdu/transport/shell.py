"""One long-lived shell per node: a step costs one round trip, not a new SSH session.

An SSH exec channel per command makes the node start a session (fork, PAM, the login shell and
its rc files) every time: 80-300 ms before any work, several times per step.  Instead each
connection keeps one session channel running :data:`DRIVER`, a small POSIX ``sh`` loop, and
every command is one framed line on its stdin.  For each command the driver:

* decodes it (the frame holds it as ``printf %b`` octal escapes: one line, no whitespace, so
  ``read -r`` takes it whole, and any text reaches the node unchanged -- no ``base64`` needed);
* runs it as ``setsid $SHELL -c COMMAND`` in the foreground (a new session, so its process
  group is its own and a timeout kills all of it; a separate process, so no cwd, variable,
  umask or trap of one step reaches the next; stdin ``/dev/null``; signals at their defaults,
  which a background job of a non-interactive shell would not have), with stdout and stderr on
  two FIFOs that two ``cat`` forward to the channel's stdout and stderr: the streams stay
  separate and arrive as they are written.  The command reaches its shell in the environment
  (``ZDU_COMMAND``, unset before the command runs) and is run with ``eval``: a process's
  arguments are anyone's to read on the node (``ps``), its environment only its own user's, so
  a secret a step pipes to its tool (``printf %s PASSWORD | tool --password-stdin``) is not
  shown in the process list while the step runs, as it would be under ``ssh node cmd`` or
  Ansible's ``shell`` module;
* reports, framed by a random per-command nonce (``\\x1e<nonce>:``): the process group
  (written by the command's own shell before it ``exec``\\ s the command, so it is known at once),
  the forwarders' pids, the exit code, and an end mark on each stream once both FIFOs reached
  end-of-file.

A command's output ends when every process holding it has closed it, exactly as with an exec
channel (and as with ``ssh node cmd`` or Ansible): a daemon started without redirecting its
output keeps the step open until the step's timeout, which kills the command's process group
as usual.  The result then says that the command itself had exited, and why the step did not
end.  (The alternative -- end the step a moment after its process exits and throw later output
away -- would either kill such a daemon with SIGPIPE at its next log line or leave a forwarder
behind on the node; a step that hangs loudly is the honest choice.)

The login shell reads its rc files once per connection (when it starts the driver), not once
per command: what they export reaches every command; ``SHLVL`` is one higher than under an exec
channel, which is what keeps bash from reading ``~/.bashrc`` again for each command.

The driver needs ``setsid``, ``mkfifo`` and ``cat`` and a private directory under
``$TMPDIR``/``/tmp`` for the FIFOs; when one is missing it says so and exits, and the caller
falls back to one exec channel per command.
"""
from __future__ import annotations

import shlex
import time
from dataclasses import dataclass, field

#: the record separator that starts every line the driver writes for the control side
MARK = b"\x1e"

#: The node side.  $1 names the FIFO directory (random per connection).  Every line it reads is
#: ``NONCE ESCAPED-COMMAND``.  Records: ``zdu-driver:ready=ID`` once on both streams (ID: $1), or
#: on stdout ``zdu-driver:missing=WHAT``; then per command ``NONCE:end``; on stderr ``NONCE:fwd=PID PID``, ``NONCE:pgid=PID``,
#: ``NONCE:exit=CODE``, ``NONCE:end``.
DRIVER = r"""
for t in setsid mkfifo cat; do
  command -v "$t" >/dev/null 2>&1 || { printf '\036zdu-driver:missing=%s\n' "$t"; exit 0; }
done
d=${TMPDIR:-/tmp}/zdu-shell.$1
(umask 077 && mkdir "$d") 2>/dev/null || { printf '\036zdu-driver:missing=a private directory %s\n' "$d"; exit 0; }
trap 'rm -rf "$d"' EXIT
trap 'exit 129' HUP
trap 'exit 143' TERM
# the login shell that started us read its rc files for the whole session; a command's bash must
# not read ~/.bashrc again (bash does for "a shell run by sshd" at SHLVL 0, and its exec made it 0)
case ${SHLVL:-} in ''|*[!0-9]*) SHLVL=0 ;; esac
SHLVL=$((SHLVL + 1))
export SHLVL
# each command's own shell: a session of its own; it reports its process group and start time
# (/proc, where there is one: a later check can tell it from a reused pid), notes a tagged
# step for a resume (see END_LOST_STEP), then becomes the command's shell.  The command comes
# in the environment, not as an argument: any user on the node can read a process's arguments
# (ps), only its own user its environment; the command's shell forgets it before it runs it
w='@PGID_REPORT@
[ -z "$3" ] || printf "%s %s %s\n" "$$" "$4" "$3" >"$5" 2>/dev/null
exec "$2" -c "eval \"unset ZDU_COMMAND;\$ZDU_COMMAND\""'
# ready on both streams, with this connection's id: what the login shell's rc files wrote
# before (a banner, a motd on stderr, even a line that looks like ours) is not a step's output
printf '\036zdu-driver:ready=%s\n' "$1"
printf '\036zdu-driver:ready=%s\n' "$1" >&2
while IFS= read -r f; do
  n=${f%% *}
  r=${f#* }
  t=${r#* }
  [ "$t" = "$r" ] && t=
  c=$(printf '%b.' "${r%% *}")
  c=${c%.}
  [ -z "$t" ] || t=$(printf '%b' "$t")
  # a step that cleaned $TMPDIR (rm -rf /tmp/*) took our directory: make it again, ours alone
  if [ -p "$d/o" ] || { { [ -d "$d" ] || (umask 077 && mkdir "$d") 2>/dev/null; } &&
      [ -O "$d" ] && mkfifo "$d/o" "$d/e"; }; then
    cat "$d/o" & o=$!
    cat "$d/e" >&2 & r=$!
    printf '\036%s:fwd=%s %s\n' "$n" "$o" "$r" >&2
    { ZDU_COMMAND=$c setsid /bin/sh -c "$w" zdu "$n" "${SHELL:-/bin/sh}" "$t" "$$" "$d/step" </dev/null >"$d/o" 2>"$d/e"; } 2>/dev/null
    s=$?
    [ -z "$t" ] || : >"$d/step"
    printf '\036%s:exit=%s\n' "$n" "$s" >&2
    { wait "$o"; a=$?; wait "$r"; b=$?; } 2>/dev/null
    # a forwarder was killed (the step was abandoned): whatever still holds those FIFOs must
    # never write into a later step's output
    [ "$a$b" = 00 ] || rm -f "$d/o" "$d/e"
  else
    printf 'zdupgrade: cannot create FIFOs in %s on the node\n' "$d" >&2
    printf '\036%s:exit=126\n' "$n" >&2
  fi
  printf '\036%s:end\n' "$n"
  printf '\036%s:end\n' "$n" >&2
done
"""

#: bytes a frame carries as they are: printable ASCII except space and backslash
_PLAIN = frozenset(range(0x21, 0x7F)) - {ord("\\")}
_ESCAPE = [chr(b) if b in _PLAIN else f"\\0{b:03o}" for b in range(256)]


def driver_command(dir_id: str, shell: str = "/bin/sh") -> str:
    """The exec request that starts the driver (``dir_id``: letters and digits)."""
    if not dir_id.isalnum():
        raise ValueError(f"bad driver id {dir_id!r}")
    # SHLVL=2 (a login bash's exec takes one off): a bash driver is not "a top-level shell run by
    # sshd", so it does not read ~/.bashrc again, whose `set -e` would end it at a step's failure
    return f"SHLVL=2 exec {shlex.quote(shell)} -c {shlex.quote(DRIVER)} zdu-driver {dir_id}"


def encode_command(command: str) -> str:
    """``command`` as one ``printf %b`` argument: no whitespace, no newline, any text."""
    return "".join(_ESCAPE[b] for b in command.encode("utf-8"))


def frame(nonce: str, command: str, tag: str | None = None) -> bytes:
    """The line that makes the driver run ``command``; with ``tag`` (a run's step: see
    :data:`END_LOST_STEP`) the driver notes ``PGID DRIVER-PID TAG`` in its directory's ``step``
    file while the command runs."""
    line = f"{nonce} {encode_command(command)}"
    if tag:
        line += f" {encode_command(tag)}"
    return f"{line}\n".encode("ascii")


#: Ends the process group ``$g`` (set before it): TERM, KILL after a grace.  Exit 0: the group
#: is gone (or holds only zombies, which a node whose init does not reap keeps for good); 3: it
#: was still running and was ended; 4: it is still there after KILL.  Formatted with ``kill_at``
#: and ``give_up`` (tenths of a second after the TERM).  ``kill -SIG -PGID``, never ``kill --``:
#: dash's builtin refuses ``--``.
END_GROUP = """alive() {{
  kill -0 -$g 2>/dev/null || return 1
  [ -r /proc/self/stat ] || return 0
  for q in /proc/[0-9]*; do
    read -r z <"$q/stat" 2>/dev/null || continue
    z=${{z##*) }}
    set -- $z
    [ "${{3:-}}" = "$g" ] && [ "$1" != Z ] && return 0
  done
  return 1
}}
alive || exit 0
kill -TERM -$g 2>/dev/null
i=0
while alive; do
  i=$((i + 1))
  [ $i -eq {kill_at} ] && kill -KILL -$g 2>/dev/null
  [ $i -ge {give_up} ] && exit 4
  sleep 0.1 2>/dev/null || sleep 1
done
exit 3"""

#: Ends the process group ``pgid`` of a command that lost its result, if it is still that
#: command's: a leader whose start time is not ``start`` is another process (the node rebooted,
#: or the pid was reused).  A leader that is gone leaves its group's number in use while any
#: member lives, so the group is still the command's.  Formatted with ``pgid``, ``start``
#: (digits, or empty where the node has no /proc) and END_GROUP's values.
END_ORPHAN = """g={pgid}
st={start}
if [ -n "$st" ] && read -r s </proc/$g/stat 2>/dev/null; then
  s=${{s##*) }}
  set -- $s
  [ "${{20:-}}" = "$st" ] || exit 0
fi
""" + END_GROUP

#: Run by a resumed run on a node where the run that died had a step in flight: that step may
#: still be running there (sshd does not signal a session command without a terminal).  Finds it
#: by the tag its driver noted, in a directory and file of this user's only, while that driver is
#: alive and the noted process is its child (unreaped, so its pid cannot have been reused); or
#: by the tag an exec channel's command noted (:func:`exec_step_note`), while the noted process
#: still has the noted start time -- checked in /proc, and without /proc nothing is ended (exit
#: 5: cannot tell) -- then :data:`END_GROUP`.  Formatted with ``tag`` (shell-quoted) and
#: END_GROUP's values.
END_LOST_STEP = """[ -r /proc/self/stat ] || exit 5
t={tag}
g=
for f in "${{TMPDIR:-/tmp}}"/zdu-shell.*/step "${{TMPDIR:-/tmp}}"/zdu-exec.*/step; do
  [ -s "$f" ] && [ ! -L "$f" ] && [ -O "$f" ] && [ ! -L "${{f%/step}}" ] && [ -O "${{f%/step}}" ] || continue
  read -r pg x tg <"$f" 2>/dev/null || continue
  [ "$tg" = "$t" ] || continue
  case "$pg$x" in ''|*[!0-9]*) continue ;; esac
  read -r st <"/proc/$pg/stat" 2>/dev/null || continue
  st=${{st##*) }}
  set -- $st
  case $f in
    */zdu-shell.*/step) kill -0 "$x" 2>/dev/null && [ "${{2:-}}" = "$x" ] || continue ;;   # x: its driver
    *) [ "${{20:-}}" = "$x" ] || continue ;;                                             # x: its start time
  esac
  g=$pg
done
[ -n "$g" ] || exit 0
""" + END_GROUP


class RecordSplitter:
    """Takes the records ``\\x1e<prefix><text>\\n`` out of one byte stream, wherever they fall
    (a record may land between any two bytes of the command's own output, and a read may end
    in the middle of one); the rest passes through unchanged."""

    #: a record is short; a "record" longer than this is output that happens to look like one
    MAX_RECORD = 256

    def __init__(self, prefix: bytes) -> None:
        self.prefix = MARK + prefix
        self.records: list[str] = []
        self._carry = b""

    def feed(self, data: bytes) -> bytes:
        """The output in ``data`` (records removed); a partial record is held back."""
        buf = self._carry + data
        self._carry = b""
        out: list[bytes] = []
        prefix = self.prefix
        while True:
            i = buf.find(prefix)
            if i < 0:
                break
            j = buf.find(b"\n", i, i + len(prefix) + self.MAX_RECORD)
            if j < 0:
                if len(buf) - i < len(prefix) + self.MAX_RECORD:
                    out.append(buf[:i])
                    self._carry = buf[i:]
                    return b"".join(out)
                out.append(buf[:i + 1])          # not a record after all
                buf = buf[i + 1:]
                continue
            out.append(buf[:i])
            self.records.append(buf[i + len(prefix):j].decode("ascii", "replace"))
            buf = buf[j + 1:]
        # the end of buf may be the start of a record cut by the read
        start = max(0, len(buf) - len(prefix) + 1)
        k = buf.find(MARK, start)
        while k >= 0:
            if prefix.startswith(buf[k:]):
                out.append(buf[:k])
                self._carry = buf[k:]
                return b"".join(out)
            k = buf.find(MARK, k + 1)
        out.append(buf)
        return b"".join(out)

    def flush(self) -> bytes:
        """Whatever was held back (the stream ended)."""
        rest, self._carry = self._carry, b""
        return rest


def pgid_report(nonce: str) -> str:
    """Shell text that writes ``\\x1eNONCE:pgid=PID:START`` to stderr for the shell running it
    (START: its start time from /proc, empty without one) and leaves nothing behind: no
    variable, function or positional parameter (a function's ``set --`` is its own).  ``nonce``
    is shell text: a literal nonce (letters and digits), or ``"$1"`` in the driver's wrapper.
    No single quote: the driver holds it inside one."""
    return ("zdu_start() { zdu_s=; if read -r zdu_s </proc/$$/stat 2>/dev/null; then "
            "zdu_s=${zdu_s##*) }; set -- $zdu_s; zdu_s=${20:-}; fi; }; zdu_start; "
            f"printf \"\\036%s:pgid=%s:%s\\n\" {nonce} \"$$\" \"$zdu_s\" >&2; unset zdu_s; unset -f zdu_start")


DRIVER = DRIVER.replace("@PGID_REPORT@", pgid_report('"$1"'))


#: what :func:`exec_launcher`'s fresh shell runs: read the command up to its end line (``@END@``),
#: then run it
_EXEC_READER = ('zdu_c=; zdu_k=; while IFS= read -r zdu_l; do '
                '[ "$zdu_l" = "@END@" ] && { zdu_k=1; break; }; zdu_c="$zdu_c$zdu_l\n"; done; '
                "[ -n \"$zdu_k\" ] || { echo 'zdupgrade: the command did not arrive whole; nothing ran' >&2; exit 126; }; "
                'eval "unset zdu_c zdu_k zdu_l; $zdu_c"')


def exec_launcher(nonce: str) -> str:
    """The exec request of the exec-channel fallback.  The login shell that sshd starts for it
    has read its rc files (for bash run by sshd: ``~/.bashrc``); it ``exec``\\ s a fresh
    ``$SHELL`` (at ``SHLVL=2``, so bash does not read ``~/.bashrc`` again) which reads the
    command from the channel's stdin and runs it: what the rc files set (``set -e``, ``set -u``,
    ``set -x``, a ``trap``, a function) does not reach the command, what they export does, as
    under the shell session's driver.  The command's text is not an argument any user on the
    node can read with ``ps``, nor in its environment (which would limit its size).  It runs only
    if the end line ``#NONCE`` arrived: a connection lost while the text was on its way must not
    run the first half of a command.  The text goes in with :func:`exec_stdin` (the caller starts
    it with :func:`begin_mark`: what the rc files print comes before that mark and is not the
    command's output, :class:`OutputGate`); the command's own stdin is at its end, as the exec
    channel gave it.  The same process all along (``exec``): still the session leader sshd
    made it."""
    if not nonce.isalnum():
        raise ValueError(f"bad nonce {nonce!r}")
    reader = _EXEC_READER.replace("@END@", f"#{nonce}")
    return f'SHLVL=2 exec "${{SHELL:-/bin/sh}}" -c {shlex.quote(reader)}'


def exec_stdin(nonce: str, command: str) -> bytes:
    """What :func:`exec_launcher` reads: the command, then its end line."""
    return f"{command}\n#{nonce}\n".encode("utf-8")


def begin_mark(token: str) -> str:
    """Shell text that writes ``\\x1eTOKEN:begin`` on stdout and on stderr: where a command's own
    output begins (``token``: letters and digits, random per command and sent on the channel's
    stdin only, so that nothing before it -- the login shell's rc files -- can print it)."""
    if not token.isalnum():
        raise ValueError(f"bad token {token!r}")
    return f"printf '\\036%s:begin\\n' {token}; printf '\\036%s:begin\\n' {token} >&2"


#: see :func:`exec_step_note`; ``@TAG@``: the tag, shell-quoted
_EXEC_STEP_NOTE = """zdu_note() {
  [ -r /proc/self/stat ] || return 0
  for zdu_f in "${TMPDIR:-/tmp}"/zdu-exec.*/step; do
    zdu_d=${zdu_f%/step}
    [ ! -L "$zdu_f" ] && [ -O "$zdu_f" ] && [ ! -L "$zdu_d" ] && [ -O "$zdu_d" ] || continue
    zdu_p=; zdu_s=; zdu_n=
    read -r zdu_p zdu_s zdu_t 2>/dev/null <"$zdu_f"
    case "$zdu_p$zdu_s" in ''|*[!0-9]*) ;; *) read -r zdu_n 2>/dev/null <"/proc/$zdu_p/stat" ;; esac
    if [ -n "$zdu_n" ]; then
      zdu_n=${zdu_n##*) }
      set -- $zdu_n
      [ "${20:-}" = "$zdu_s" ] && continue
    fi
    rm -rf "$zdu_d" 2>/dev/null
  done
  read -r zdu_n 2>/dev/null </proc/$$/stat || return 0
  zdu_n=${zdu_n##*) }
  set -- $zdu_n
  zdu_d=${TMPDIR:-/tmp}/zdu-exec.$$
  (umask 077 && mkdir "$zdu_d") 2>/dev/null || { [ ! -L "$zdu_d" ] && [ -d "$zdu_d" ] && [ -O "$zdu_d" ]; } || return 0
  printf '%s %s %s\\n' "$$" "${20:-}" @TAG@ >"$zdu_d/step" 2>/dev/null
}
zdu_note; unset zdu_f zdu_d zdu_p zdu_s zdu_t zdu_n; unset -f zdu_note"""


def exec_step_note(tag: str) -> str:
    """Shell text for an exec channel's command (its own shell, the session leader) that notes
    ``PID START TAG`` in ``$TMPDIR/zdu-exec.PID/step`` (a directory of this user's, not a link)
    for :data:`END_LOST_STEP`: a resumed run can then end the step of a run that died on a node
    on the exec fallback, as through the driver.  The file is not removed when the command ends
    (its shell is the command's, to the end); a later note removes those of this user whose
    process is gone (or has another start time), and a stale one never matches.  Without /proc
    it notes nothing (a resume cannot check there anyway).  Leaves no variable or function."""
    return _EXEC_STEP_NOTE.replace("@TAG@", shlex.quote(tag))


class OutputGate:
    """One stream of an exec channel: drops everything up to and including the first
    ``\\x1eTOKEN:begin`` line (:func:`begin_mark`), wherever reads cut it; passes the rest
    through unchanged.  Until then it holds the last :attr:`KEEP` bytes dropped (bounded
    memory), :attr:`dropped`: what the node said when the command never started."""

    KEEP = 4096

    def __init__(self, token: str) -> None:
        self.mark = MARK + f"{token}:begin\n".encode("ascii")
        self.opened = False
        self._held = b""

    def feed(self, data: bytes) -> bytes:
        """The command's own output in ``data`` (nothing before the mark)."""
        if self.opened:
            return data
        buf = self._held + data
        i = buf.find(self.mark)
        if i < 0:
            self._held = buf[-self.KEEP:]     # KEEP > len(mark): a mark cut by a read stays whole
            return b""
        self.opened, self._held = True, b""
        return buf[i + len(self.mark):]

    @property
    def dropped(self) -> bytes:
        """The last bytes dropped while the mark had not come (b"" once it came)."""
        return self._held


def parse_pgid(value: str) -> tuple[int, str] | None:
    """A ``pgid=`` record's value, ``PID`` or ``PID:START``: (pid, start time or "")."""
    pid, _, start = value.partition(":")
    if not (pid.isascii() and pid.isdigit() and len(pid) <= 10) or \
            not (start == "" or (start.isascii() and start.isdigit() and len(start) <= 20)):
        return None
    return int(pid), start


@dataclass
class StepState:
    """What the driver reported about one command so far."""

    nonce: str
    started: float = field(default_factory=time.monotonic)
    pgid: int | None = None
    leader_start: str = ""     # the group leader's start time (/proc/PID/stat), "" if unknown
    forwarders: tuple[int, ...] = ()
    exit_code: int | None = None
    exited_at: float | None = None
    ends: int = 0            # 2: both streams are complete

    def apply(self, record: str) -> None:
        """Take one record (``pgid=..``, ``fwd=..``, ``exit=..``, ``end``)."""
        key, _, value = record.partition("=")
        if key == "pgid":
            self.pgid, self.leader_start = parse_pgid(value) or (self.pgid, self.leader_start)
        elif key == "fwd":
            self.forwarders = tuple(int(p) for p in value.split() if p.isdigit())
        elif key == "exit" and value.isdigit():
            self.exit_code = int(value)
            self.exited_at = time.monotonic()
        elif key == "end":
            self.ends += 1

    @property
    def done(self) -> bool:
        return self.ends >= 2 and self.exit_code is not None
