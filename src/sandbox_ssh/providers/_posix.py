"""Shell snippets for runtimes whose exec API has no signal or kill call.

Docker and Kubernetes both lack one, and both leave a process running when
its exec stream is closed. Every exec'd process is a session leader
(runc calls setsid), so its PID names its session and its process group.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from ..hooks import OutputStream, SandboxError, TerminalSize, UserInfo

Output = tuple[OutputStream, bytes]

# Prints the process's PID (in the sandbox's PID namespace) on the first line
# of stdout, then becomes the real command with the same PID. $1 is "ROWS COLS" for a
# terminal, sized before the PID line: the gateway resizes only after that line, so a
# window-change the client sent meanwhile is never undone (Docker's exec API before 1.42
# takes no initial size).
PID_REPORT_SCRIPT = (
    '[ -z "$1" ] || stty rows "${1% *}" cols "${1#* }" 2>/dev/null; shift; echo "$$"; exec "$@"'
)

# sshd accepts these names in a "signal" channel request (RFC 4254 6.10).
SIGNAL_NAMES = frozenset(
    {
        "ABRT",
        "ALRM",
        "FPE",
        "HUP",
        "ILL",
        "INT",
        "KILL",
        "PIPE",
        "QUIT",
        "SEGV",
        "TERM",
        "USR1",
        "USR2",
    }
)

# Hangs up what still holds the session: every process of the sandbox with the
# session's stdio or terminal open gets SIGHUP (and SIGCONT); after the grace,
# those still holding it that do not ignore SIGHUP get SIGKILL. A process that
# let go of the session's stdio (a daemon redirected to /dev/null) lives on, as
# under sshd, whatever its session or process group.
#
# The session's stdio are the leader's descriptors 0-2 (pipes or a terminal);
# the script holds copies (3-5) while it looks, so the leader exiting midway
# loses nothing. With the leader already gone, the session's members still on a
# pipe or terminal are taken instead. The script's own processes are skipped.
#
# $1 the leader's PID (its session ID), $2 grace in tenths of a second.
HANGUP_SCRIPT = r"""
sid=$1 ticks=$2 me=$$
{ read -r st </proc/$me/stat; } 2>/dev/null
st=${st##*) }; set -f; set -- $st; set +f
own_sid=$4
refs=
keep() {
    if [ -p "/proc/$me/fd/$1" ] || [ -t "$1" ]; then refs="$refs /proc/$me/fd/$1"; fi
}
{ command exec 3<>"/proc/$sid/fd/0"; } 2>/dev/null && keep 3
{ command exec 4<>"/proc/$sid/fd/1"; } 2>/dev/null && keep 4
{ command exec 5<>"/proc/$sid/fd/2"; } 2>/dev/null && keep 5
on_stdio() {
    for f in 0 1 2; do
        if [ -p "$1/fd/$f" ]; then return 0; fi
        if [ -c "$1/fd/$f" ] && ! [ "$1/fd/$f" -ef /dev/null ]; then return 0; fi
    done
    return 1
}
holders() {
    for d in /proc/[0-9]*; do
        { read -r st <"$d/stat"; } 2>/dev/null || continue
        st=${st##*) }
        set -f; set -- $st; set +f
        if [ "$1" = Z ] || [ "$4" = "$own_sid" ]; then continue; fi
        if [ -n "$refs" ]; then
            for f in "$d"/fd/*; do
                for r in $refs; do
                    if [ "$f" -ef "$r" ]; then echo "${d#/proc/}"; continue 3; fi
                done
            done
        elif [ "$4" = "$sid" ] && on_stdio "$d"; then
            echo "${d#/proc/}"
        fi
    done
}
ignores_hup() {
    { while read -r key value; do
        if [ "$key" = SigIgn: ]; then
            case $value in *[13579bdfBDF]) return 0 ;; esac
            return 1
        fi
    done <"/proc/$1/status"; } 2>/dev/null
    return 1
}
pids=$(holders)
[ -n "$pids" ] || exit 0
kill -HUP $pids 2>/dev/null
kill -CONT $pids 2>/dev/null
i=0
while :; do
    left=
    for p in $(holders); do ignores_hup "$p" || left="$left $p"; done
    [ -n "$left" ] || exit 0
    [ "$i" -lt "$ticks" ] || break
    sleep 0.1 2>/dev/null || sleep 1
    i=$((i + 1))
done
kill -KILL $left 2>/dev/null
exit 0
"""


# What a sandbox may say before its PID line, and how long it may take: its root
# controls /bin/sh, so the wait for the line is bounded in bytes and in time.
MAX_PID_LINE = 32
MAX_EARLY_STDERR = 64 * 1024
PID_LINE_TIMEOUT = 30.0
# A short helper's (whoami, hang-up, signal) output kept at most, and its longest run.
MAX_SHORT_OUTPUT = 64 * 1024
SHORT_TIMEOUT = 15.0


class Login:
    """The login step's first answer, awaited in the background after a start returns.

    Exec-only runtimes start the wrapper, then wait for its PID line; that wait is the
    sandbox's to end, so it runs outside the start's slot. Everything that needs the PID
    (or must not reach the process before it: typed-ahead input a terminal would echo
    first) waits for it here.
    """

    def __init__(self, log_in: Awaitable[None]) -> None:
        self._task = asyncio.ensure_future(log_in)

    async def done(self) -> None:
        """Return once logged in; SandboxError when the sandbox never answered."""
        await asyncio.shield(self._task)

    async def succeeded(self) -> bool:
        try:
            await self.done()
        except SandboxError:
            return False
        return True

    def close(self) -> None:
        if not self._task.done():
            self._task.cancel()
        elif not self._task.cancelled():
            self._task.exception()  # seen: nobody may have waited for a failed login


async def read_pid_line(
    receive: Callable[[], Awaitable[Output | None]],
    within: float = PID_LINE_TIMEOUT,
) -> tuple[int | None, list[Output]]:
    """Consume the PID line a wrapper prints first; keep everything else, in order.

    Returns the PID and the output to pass on. Without a PID line (the stream ended, or
    the first line is the runtime's own error, e.g. a missing /bin/sh), the PID is None
    and that text is passed on as stderr. A first line longer than a PID's is not one.
    Raises SandboxError when no line comes within ``within`` seconds.
    """
    try:
        async with asyncio.timeout(within):
            return await _read_pid_line(receive)
    except TimeoutError:
        raise SandboxError(
            f"the sandbox's /bin/sh did not start the session within {within:g} s"
        ) from None


async def _read_pid_line(
    receive: Callable[[], Awaitable[Output | None]],
) -> tuple[int | None, list[Output]]:
    pending: list[Output] = []
    early_stderr = 0
    first_line = bytearray()
    while (chunk := await receive()) is not None:
        if chunk[0] is not OutputStream.STDOUT:
            early_stderr += len(chunk[1])
            if early_stderr > MAX_EARLY_STDERR:
                raise SandboxError("the sandbox's /bin/sh wrote too much before starting")
            pending.append(chunk)
            continue
        first_line += chunk[1]
        line, newline, rest = first_line.partition(b"\n")
        if not newline:
            if len(first_line) > MAX_PID_LINE:
                pending.append((OutputStream.STDERR, bytes(first_line)))
                return None, pending
            continue
        text = line.rstrip(b"\r")
        if not text.isdigit():
            pending.append((OutputStream.STDERR, bytes(first_line)))
            return None, pending
        if rest:
            pending.append((OutputStream.STDOUT, bytes(rest)))
        return int(text), pending
    if first_line:
        pending.append((OutputStream.STDERR, bytes(first_line)))
    return None, pending


def pid_report_argv(argv: Sequence[str], terminal: TerminalSize | None = None) -> list[str]:
    size = f"{terminal.rows} {terminal.cols}" if terminal else ""
    return ["/bin/sh", "-c", PID_REPORT_SCRIPT, "sandbox-ssh", size, *argv]


def signal_argv(pid: int, signal_name: str) -> list[str]:
    if signal_name not in SIGNAL_NAMES:
        raise ValueError(f"unknown signal {signal_name!r}")
    return [
        "/bin/sh",
        "-c",
        'kill -s "$1" -- "-$2" 2>/dev/null || kill -s "$1" "$2"',
        "sandbox-ssh",
        signal_name,
        str(pid),
    ]


def hangup_argv(pid: int, grace_seconds: float) -> list[str]:
    ticks = max(0, round(grace_seconds * 10))
    return ["/bin/sh", "-c", HANGUP_SCRIPT, "sandbox-ssh", str(pid), str(ticks)]


# Resolves the process's own uid, gid and name inside the sandbox, without `id`.
WHOAMI_SCRIPT = r"""
while read -r key real _; do
    case $key in Uid:) uid=$real ;; Gid:) gid=$real ;; esac
done </proc/self/status
name=$(getent passwd "$uid" 2>/dev/null | cut -d: -f1)
if [ -z "$name" ] && [ -r /etc/passwd ]; then
    while IFS=: read -r n _ u _; do [ "$u" = "$uid" ] && { name=$n; break; }; done </etc/passwd
fi
echo "$uid $gid ${name:-$uid}"
"""
WHOAMI_ARGV = ("/bin/sh", "-c", WHOAMI_SCRIPT)


def parse_whoami(output: bytes) -> UserInfo | None:
    """WHOAMI_SCRIPT's line, or None when it is not what the script prints."""
    fields = output.decode(errors="replace").split()
    if len(fields) != 3 or not fields[0].isdigit() or not fields[1].isdigit():
        return None
    return UserInfo(username=fields[2], uid=int(fields[0]), gid=int(fields[1]))


async def collect_short(
    receive: Callable[[], Awaitable[Output | None]],
    limit: int = MAX_SHORT_OUTPUT,
    within: float = SHORT_TIMEOUT,
) -> bytes:
    """A short helper's stdout, to its end; bounded in bytes and in time (SandboxError)."""
    output = bytearray()
    try:
        async with asyncio.timeout(within):
            while (chunk := await receive()) is not None:
                if chunk[0] is OutputStream.STDOUT:
                    output += chunk[1]
                    if len(output) > limit:
                        raise SandboxError(f"the sandbox's answer was longer than {limit} bytes")
    except TimeoutError:
        raise SandboxError(f"the sandbox did not answer within {within:g} s") from None
    return bytes(output)
