"""The wrapper every process starts through: Kubernetes' exec has no user, env or workdir.

The wrapper prints its PID, then reads the user, the working directory, the
environment (added to the container's, as `docker exec -e` does) and the command
from stdin, so neither secrets nor commands reach
the exec URL (or the API server's audit log), and no URL length limit bites.
Each value is one line of octal escapes, which ``printf`` decodes. With a
terminal, echo and line editing are off while the wrapper reads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ...hooks import TerminalSize

# $1: "ROWS COLS" with a terminal (sized before the PID line: the gateway resizes only after
# it, so a window-change sent meanwhile is never undone), else empty.
LOGIN_SCRIPT = r"""
saved=
if [ -n "$1" ]; then
    stty rows "${1% *}" cols "${1#* }" 2>/dev/null
    saved=$(stty -g 2>/dev/null)
    stty -echo -icanon min 1 time 0 2>/dev/null
fi
echo "$$"
next() { IFS= read -r line || exit 125; v=$(printf "${line}x"); v=${v%x}; }
next; uid=$v; next; gid=$v; next; dir=$v; next; count=$v
set --
while [ "$count" -gt 0 ]; do next; set -- "$@" "$v"; count=$((count - 1)); done
[ -z "$saved" ] || stty "$saved" 2>/dev/null
[ -z "$dir" ] || cd -- "$dir" 2>/dev/null || cd /
me=$(id -u)
if [ "$me" = "$uid" ]; then exec env "$@"; fi
if [ "$me" != 0 ]; then
    echo "sandbox-ssh: the sandbox's container runs as uid $me," \
        "so it cannot run processes as uid $uid" >&2
    exit 126
fi
if ! command -v setpriv >/dev/null 2>&1; then
    echo "sandbox-ssh: the sandbox has no setpriv (util-linux) to run processes as uid $uid" >&2
    exit 126
fi
primary=$(getent passwd "$uid" 2>/dev/null | cut -d: -f4)
groups=--clear-groups
if [ -n "$primary" ] && [ "$primary" = "$gid" ]; then groups=--init-groups; fi
exec setpriv --reuid="$uid" --regid="$gid" "$groups" -- env "$@"
"""

# Runs "$@" as uid $1, gid $2 (for the hang-up, which must read the session's /proc/PID/fd).
AS_USER_SCRIPT = r"""
uid=$1 gid=$2; shift 2
if [ "$(id -u)" = "$uid" ]; then exec "$@"; fi
exec setpriv --reuid="$uid" --regid="$gid" --clear-groups -- "$@"
"""


def login_argv(terminal: TerminalSize | None) -> list[str]:
    size = f"{terminal.rows} {terminal.cols}" if terminal else ""
    return ["/bin/sh", "-c", LOGIN_SCRIPT, "sandbox-ssh", size]


def as_user_argv(uid: int, gid: int, argv: Sequence[str]) -> list[str]:
    return ["/bin/sh", "-c", AS_USER_SCRIPT, "sandbox-ssh", str(uid), str(gid), *argv]


def _encoded(value: str) -> bytes:
    return b"".join(b"\\%03o" % byte for byte in value.encode()) + b"\n"


def login_preamble(
    uid: int, gid: int, workdir: str | None, env: Mapping[str, str], argv: Sequence[str]
) -> bytes:
    """What the wrapper reads: uid, gid, workdir, count, then env entries and argv."""
    values = [str(uid), str(gid), workdir or ""]
    words = [f"{key}={value}" for key, value in env.items()] + list(argv)
    values.append(str(len(words)))
    return b"".join(_encoded(value) for value in [*values, *words])
