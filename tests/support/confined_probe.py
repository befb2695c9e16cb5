"""A process confined as serve confines its fronts, trying what a compromised front would.

    python -m tests.support.confined_probe ALLOWED_DIR OUTSIDE_DIR

Run as root: it confines itself (``sandbox_ssh._privsep.confine``) as the default front
user, then tries each operation and prints one JSON object: for each, "ok" or the
errno's name. Its own status lines (ids, capabilities, no_new_privs, seccomp) come
with it. Each attempt runs in this process, as Chromium's BPF death tests do.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path

from sandbox_ssh._privsep.confine import ENGINE_SOCKETS, confine
from sandbox_ssh._privsep.user import front_user

_libc = ctypes.CDLL(None, use_errno=True)
_SYS = {"kexec_load": 246, "init_module": 175, "finit_module": 313, "io_uring_setup": 425}
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000
_PTRACE_TRACEME = 0  # allowed to anyone: only the filter can refuse it


def _errno_of(call: Callable[[], int]) -> str:
    ctypes.set_errno(0)
    result = call()
    if result == -1:
        return errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
    return "ok"


def _os_error(call: Callable[[], object]) -> str:
    try:
        call()
    except OSError as error:
        return errno.errorcode.get(error.errno or 0, str(error.errno))
    return "ok"


def _connect(path: str) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(path)


def main() -> None:
    allowed, outside = Path(sys.argv[1]), Path(sys.argv[2])
    user = front_user(None)
    confine(user, [allowed])
    status = {
        line.split(":", 1)[0]: line.split(":", 1)[1].strip()
        for line in Path("/proc/self/status").read_text().splitlines()
        if line.startswith(("Uid", "Gid", "Groups", "Cap", "NoNewPrivs", "Seccomp"))
    }
    target = os.open("/proc/self/ns/net", os.O_RDONLY)
    engine = next((path for path in ENGINE_SOCKETS if os.path.exists(path)), "")
    attempts: dict[str, str] = {
        "execve": _os_error(lambda: os.execv("/bin/true", ["/bin/true"])),
        "ptrace": _errno_of(lambda: _libc.ptrace(_PTRACE_TRACEME, 0, None, None)),
        "mount": _errno_of(lambda: _libc.mount(b"none", b"/mnt", b"tmpfs", 0, None)),
        "setns": _errno_of(lambda: _libc.setns(target, _CLONE_NEWNET)),
        # A user namespace is open to unprivileged users on Debian: only the filter refuses.
        "unshare": _errno_of(lambda: _libc.unshare(_CLONE_NEWUSER)),
        "init_module": _errno_of(lambda: _libc.syscall(_SYS["init_module"], None, 0, b"")),
        "finit_module": _errno_of(lambda: _libc.syscall(_SYS["finit_module"], 0, b"", 0)),
        "kexec_load": _errno_of(lambda: _libc.syscall(_SYS["kexec_load"], 0, 0, None, 0)),
        "io_uring_setup": _errno_of(lambda: _libc.syscall(_SYS["io_uring_setup"], 1, None)),
        "engine_socket": _os_error(lambda: _connect(engine)) if engine else "absent",
        "read_shadow": _os_error(lambda: Path("/etc/shadow").read_bytes()),
        "write_outside": _os_error(lambda: (outside / "front-wrote-here").write_text("x")),
        "write_allowed": _os_error(lambda: (allowed / "front-state").write_text("x")),
        "thread": _os_error(lambda: __import__("threading").Thread(target=lambda: None).start()),
    }
    print(json.dumps({"status": status, "attempts": attempts, "user": user.name}))


if __name__ == "__main__":
    main()
