"""Whether a sandbox's pids limit is reached, read from its cgroup on the host.

A process started while the limit is reached fails inside the runtime's own init,
which prints a Go crash dump on the session's stderr. Checked first, the client
gets one line instead. (The kernel's cgroup files; nothing the sandbox controls.)
"""

from __future__ import annotations

import contextlib

_ROOTS = ("/sys/fs/cgroup/pids", "/sys/fs/cgroup/unified", "/sys/fs/cgroup")
_MAX_READ = 64


def _read(path: str, limit: int = _MAX_READ) -> str | None:
    with contextlib.suppress(OSError), open(path) as file:
        return file.read(limit).strip()
    return None


def pids_cgroup(pid: int) -> str | None:
    """The directory of ``pid``'s pids cgroup (v1 or v2), or None when there is none."""
    for line in (_read(f"/proc/{pid}/cgroup", 1 << 16) or "").splitlines():
        _, controllers, path = [*line.split(":", 2), "", ""][:3]
        if controllers not in ("pids", ""):
            continue
        for root in _ROOTS:
            directory = f"{root}{path}"
            if _read(f"{directory}/pids.max") is not None:
                return directory
    return None


def pids_limit_reached(directory: str | None) -> int | None:
    """The limit when the cgroup has no free PID now, else None."""
    if directory is None:
        return None
    limit, current = _read(f"{directory}/pids.max"), _read(f"{directory}/pids.current")
    if not limit or not current or not limit.isdigit() or not current.isdigit():
        return None  # "max", or unreadable: no limit to reach
    return int(limit) if int(current) >= int(limit) else None
