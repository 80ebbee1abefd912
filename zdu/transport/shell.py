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
  separate and arrive as they are written;
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
#: ``NONCE ESCAPED-COMMAND``.  Records: on stdout ``zdu-driver:ready`` / ``zdu-driver:missing=WHAT``
#: once, then per command ``NONCE:end``; on stderr ``NONCE:fwd=PID PID``, ``NONCE:pgid=PID``,
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
printf '\036zdu-driver:ready\n'
while IFS= read -r f; do
  n=${f%% *}
  r=${f#* }
  t=${r#* }
  [ "$t" = "$r" ] && t=
  c=$(printf '%b.' "${r%% *}")
  c=${c%.}
  [ -z "$t" ] || t=$(printf '%b' "$t")
  if [ -p "$d/o" ] || mkfifo "$d/o" "$d/e"; then
    cat "$d/o" & o=$!
    cat "$d/e" >&2 & r=$!
    printf '\036%s:fwd=%s %s\n' "$n" "$o" "$r" >&2
    { setsid /bin/sh -c 'printf "\036%s:pgid=%s\n" "$1" "$$" >&2; [ -z "$4" ] || printf "%s %s %s\n" "$$" "$5" "$4" >"$6" 2>/dev/null; exec "$2" -c "$3"' zdu "$n" "${SHELL:-/bin/sh}" "$c" "$t" "$$" "$d/step" </dev/null >"$d/o" 2>"$d/e"; } 2>/dev/null
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
    return f"exec {shlex.quote(shell)} -c {shlex.quote(DRIVER)} zdu-driver {dir_id}"


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
#: is gone; 3: it was still running and was ended; 4: it is still there after KILL.  Formatted
#: with ``kill_at`` and ``give_up`` (tenths of a second after the TERM).
END_GROUP = """kill -0 -- -$g 2>/dev/null || exit 0
kill -TERM -- -$g 2>/dev/null
i=0
while kill -0 -- -$g 2>/dev/null; do
  i=$((i + 1))
  [ $i -eq {kill_at} ] && kill -KILL -- -$g 2>/dev/null
  [ $i -ge {give_up} ] && exit 4
  sleep 0.1 2>/dev/null || sleep 1
done
exit 3"""

#: Run by a resumed run on a node where the run that died had a step in flight: that step may
#: still be running there (sshd does not signal a session command without a terminal).  Finds it
#: by the tag its driver noted -- only while that driver is alive and the noted process is its
#: child (unreaped, so its pid cannot have been reused) -- then :data:`END_GROUP`.  Formatted
#: with ``tag`` (shell-quoted) too.
END_LOST_STEP = """t={tag}
g=
for f in "${{TMPDIR:-/tmp}}"/zdu-shell.*/step; do
  [ -s "$f" ] || continue
  read -r pg dp tg <"$f" 2>/dev/null || continue
  [ "$tg" = "$t" ] || continue
  case "$pg$dp" in ''|*[!0-9]*) continue ;; esac
  kill -0 "$dp" 2>/dev/null || continue
  if [ -r "/proc/$pg/stat" ]; then
    read -r st <"/proc/$pg/stat" || continue
    st=${{st##*) }}
    set -- $st
    [ "${{2:-}}" = "$dp" ] || continue
  fi
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


@dataclass
class StepState:
    """What the driver reported about one command so far."""

    nonce: str
    started: float = field(default_factory=time.monotonic)
    pgid: int | None = None
    forwarders: tuple[int, ...] = ()
    exit_code: int | None = None
    exited_at: float | None = None
    ends: int = 0            # 2: both streams are complete

    def apply(self, record: str) -> None:
        """Take one record (``pgid=..``, ``fwd=..``, ``exit=..``, ``end``)."""
        key, _, value = record.partition("=")
        if key == "pgid" and value.isdigit():
            self.pgid = int(value)
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
