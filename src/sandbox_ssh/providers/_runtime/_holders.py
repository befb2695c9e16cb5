"""Which processes of a sandbox still hold a session's stdio or terminal (Linux procfs).

sshd's hang-up reaches exactly those: the pipes close under them and the
terminal hangs up. A daemon that redirected its stdio elsewhere let go of
the session, and lives on. The scan compares open descriptors by
(device, inode), so it sees a process that inherited the session's pipes
wherever it went (another process group, another session).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

Identity = tuple[int, int]  # (st_dev, st_ino) of an open file
_SIGHUP_BIT = 1 << 0  # bit N-1 of SigIgn is signal N


def identity_of_fd(fd: int) -> Identity:
    info = os.fstat(fd)
    return info.st_dev, info.st_ino


def pid_namespace(pid: int, proc: str = "/proc") -> str | None:
    try:
        return os.readlink(f"{proc}/{pid}/ns/pid")
    except OSError:
        return None


@dataclass(frozen=True)
class Holder:
    pid: int
    ignores_hangup: bool


def _pids(proc: str) -> Iterator[int]:
    with os.scandir(proc) as entries:
        for entry in entries:
            if entry.name.isdigit():
                yield int(entry.name)


def _holds(pid: int, targets: frozenset[Identity], proc: str) -> bool:
    fd_dir = f"{proc}/{pid}/fd"
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return False  # gone, or a zombie
    for name in names:
        with contextlib.suppress(OSError):
            info = os.stat(f"{fd_dir}/{name}")
            if (info.st_dev, info.st_ino) in targets:
                return True
    return False


def _ignores_hangup(pid: int, proc: str) -> bool:
    try:
        with open(f"{proc}/{pid}/status") as status:
            for line in status:
                if line.startswith("SigIgn:"):
                    return bool(int(line.split()[1], 16) & _SIGHUP_BIT)
    except (OSError, ValueError):
        pass
    return False


def find_holders(
    namespace: str, targets: Iterable[Identity], proc: str = "/proc", exclude: int = 0
) -> list[Holder]:
    """Processes in PID namespace ``namespace`` with any of ``targets`` open."""
    wanted = frozenset(targets)
    found = []
    for pid in _pids(proc):
        if pid == exclude or pid_namespace(pid, proc) != namespace:
            continue
        if _holds(pid, wanted, proc):
            found.append(Holder(pid, _ignores_hangup(pid, proc)))
    return found
