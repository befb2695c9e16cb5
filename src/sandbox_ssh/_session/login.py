"""The login step that sshd performs in its child, done inside the sandbox.

The sandbox's own passwd (through NSS when ``getent`` exists) decides the
home directory and login shell, so nothing about accounts is cached on the
gateway. The script is POSIX sh and uses only shell built-ins on its main path.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence

from ..hooks import TerminalSize, UserInfo


class Mode(enum.Enum):
    SHELL = "shell"  # the user's login shell, interactive or on pipes
    EXEC = "exec"  # $SHELL -c "<command>"
    DIRECT = "direct"  # argv as given (subsystems, helpers)


# $1 mode, $2 fallback user name, $3 "ROWS COLS" or "", $4 stty mode arguments, $5.. the command.
LOGIN_SCRIPT = r"""
mode=$1 fallback_name=$2 tty_size=$3 tty_modes=$4
shift 4
uid=
while read -r key real _; do
    if [ "$key" = "Uid:" ]; then uid=$real; break; fi
done </proc/self/status
pw_name= pw_dir= pw_shell=
entry=
if command -v getent >/dev/null 2>&1; then entry=$(getent passwd "$uid" 2>/dev/null); fi
if [ -n "$entry" ]; then
    IFS=: read -r pw_name _ _ _ _ pw_dir pw_shell <<EOF
$entry
EOF
elif [ -r /etc/passwd ]; then
    while IFS=: read -r n _ u _ _ d s; do
        if [ "$u" = "$uid" ]; then pw_name=$n pw_dir=$d pw_shell=$s; break; fi
    done </etc/passwd
fi
USER=${pw_name:-$fallback_name}
LOGNAME=$USER
HOME=${pw_dir:-/}
SHELL=${pw_shell:-/bin/sh}
MAIL=/var/mail/$USER
export USER LOGNAME HOME SHELL MAIL
if [ -t 0 ]; then
    SSH_TTY=$(tty 2>/dev/null) && export SSH_TTY
    set -f
    [ -z "$tty_modes" ] || stty $tty_modes 2>/dev/null
    # The provider sizes the terminal before the process runs, and the gateway resizes it
    # as the client asks; a size set here would undo a resize that came first. Only a
    # terminal left without one (a provider that does not size it) gets the pty-req's.
    if [ -n "$tty_size" ] && [ "$(stty size 2>/dev/null)" = "0 0" ]; then
        stty rows "${tty_size%% *}" cols "${tty_size##* }" 2>/dev/null
    fi
    set +f
fi
if ! cd "$HOME" 2>/dev/null; then
    printf 'Could not chdir to home directory %s: No such file or directory\n' "$HOME" >&2
    cd /
fi
case $mode in
    shell) exec "$SHELL" -l ;;
    exec)
        # $2 is $1 with "~SESSION" made "~", used unless the sandbox has a user named $3.
        if [ "$1" != "$2" ]; then
            known=
            if command -v getent >/dev/null 2>&1; then
                getent passwd "$3" >/dev/null 2>&1 && known=1
            elif [ -r /etc/passwd ]; then
                while IFS=: read -r n _; do [ "$n" = "$3" ] && known=1; done </etc/passwd
            fi
            [ -n "$known" ] || set -- "$2"
        fi
        exec "$SHELL" -c "$1" ;;
    *) exec "$@" ;;
esac
"""


def expand_session_home(command: str, session_id: str) -> str:
    """``command`` with each ``~SESSION`` tilde-prefix made ``~`` (the session user's home).

    The SSH username is the session ID, not a user of the sandbox, so a client that
    asks for the SSH user's home as ``~user`` (Ansible does, for its temporary
    directory) would get the literal text, or "no such user". It means the session
    user's home; the login step uses this form unless the sandbox has such a user.
    """
    pattern = rf"(?:(?<=^)|(?<=[\s'\"=:(;&|`]))~{re.escape(session_id)}(?=$|[/\s'\";&|)`])"
    return re.sub(pattern, "~", command)


# SSH terminal-mode opcodes (RFC 4254 section 8) and their stty names.
_CHARACTER_MODES: Mapping[int, str] = {
    1: "intr",
    2: "quit",
    3: "erase",
    4: "kill",
    5: "eof",
    6: "eol",
    7: "eol2",
    8: "start",
    9: "stop",
    10: "susp",
    12: "rprnt",
    13: "werase",
    14: "lnext",
    18: "discard",
}
_FLAG_MODES: Mapping[int, str] = {
    30: "ignpar",
    31: "parmrk",
    32: "inpck",
    33: "istrip",
    34: "inlcr",
    35: "igncr",
    36: "icrnl",
    37: "iuclc",
    38: "ixon",
    39: "ixany",
    40: "ixoff",
    41: "imaxbel",
    42: "iutf8",
    50: "isig",
    51: "icanon",
    53: "echo",
    54: "echoe",
    55: "echok",
    56: "echonl",
    57: "noflsh",
    58: "tostop",
    59: "iexten",
    60: "echoctl",
    61: "echoke",
    62: "pendin",
    70: "opost",
    71: "olcuc",
    72: "onlcr",
    73: "ocrnl",
    74: "onocr",
    75: "onlret",
    92: "parenb",
    93: "parodd",
}
_DISABLED_CHARACTER = 255


def _stty_character(value: int) -> str:
    if value == _DISABLED_CHARACTER:
        return "undef"
    if value == 127:
        return "^?"
    if value < 32:
        return "^" + chr(value + 64)
    return chr(value) if 32 < value < 127 else "undef"


def stty_mode_arguments(modes: Mapping[int, int]) -> list[str]:
    """stty arguments for a pty-req's encoded terminal modes."""
    args: list[str] = []
    for opcode, value in sorted(modes.items()):
        if opcode in _CHARACTER_MODES:
            args += [_CHARACTER_MODES[opcode], _stty_character(value)]
        elif opcode in _FLAG_MODES:
            args.append(_FLAG_MODES[opcode] if value else "-" + _FLAG_MODES[opcode])
        elif opcode == 91 and value:  # CS8
            args.append("cs8")
    return args


def login_argv(
    mode: Mode,
    user: UserInfo,
    command: str | Sequence[str] | None,
    terminal: TerminalSize | None = None,
    terminal_modes: Mapping[int, int] | None = None,
    session_id: str = "",
) -> list[str]:
    """argv that logs ``user`` in inside the sandbox and runs what the channel asked for."""
    if mode is Mode.SHELL:
        tail: list[str] = []
    elif mode is Mode.EXEC:
        assert isinstance(command, str)
        expanded = expand_session_home(command, session_id) if session_id else command
        tail = [command, expanded, session_id]
    else:
        assert command is not None and not isinstance(command, str)
        tail = list(command)
    size = f"{terminal.rows} {terminal.cols}" if terminal else ""
    modes = " ".join(stty_mode_arguments(terminal_modes or {})) if terminal else ""
    return [
        "/bin/sh",
        "-c",
        LOGIN_SCRIPT,
        "sandbox-ssh",
        mode.value,
        user.username,
        size,
        modes,
        *tail,
    ]
