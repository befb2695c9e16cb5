"""A front makes itself unprivileged, right after the fork and before it reads a client's byte.

In this order, while the process is still root and has a single thread:

1. its primary group alone (no supplementary groups), then its user, for every id
   (real, effective, saved);
2. no capabilities: the bounding set emptied and the ambient set cleared while root
   may still do it, then the effective, permitted and inheritable sets zeroed;
3. ``no_new_privs``: nothing it could execute may gain privileges;
4. Landlock: writes only beneath its state and log paths (reads are left to the file
   permissions; the front reads its configuration per connection);
5. the seccomp filter of ``seccomp.py``, synchronised over every thread.

Then it checks what it must no longer reach (the container engine's sockets) and
refuses to go on if it still can.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from . import seccomp
from .user import FrontUser

log = logging.getLogger("sandbox_ssh")

_PR_CAPBSET_DROP = 24
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
# The container engines' API sockets: a front that can reach one could run anything.
ENGINE_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock", "/run/podman/podman.sock")

_libc = ctypes.CDLL(None, use_errno=True)


class ConfinementError(Exception):
    """The front could not be confined; it must not serve."""


@dataclass(frozen=True)
class Confinement:
    """What the front ended up with, for its start-up log line."""

    landlock_abi: int
    seccomp_rules: int


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _prctl(option: int, arg: int, what: str) -> None:
    if _libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0) != 0:
        code = ctypes.get_errno()
        raise ConfinementError(f"{what}: {os.strerror(code)}")


def _last_capability() -> int:
    try:
        return int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    except (OSError, ValueError):
        return 40


def _drop_capabilities() -> None:
    for capability in range(_last_capability() + 1):
        if _libc.prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            code = ctypes.get_errno()
            if code != 22:  # EINVAL: a capability this kernel does not know
                raise ConfinementError(f"cannot drop capability {capability}: {os.strerror(code)}")
    _prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, "cannot clear the ambient capabilities")


def _zero_capability_sets() -> None:
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if _libc.capset(ctypes.byref(header), data) != 0:
        raise ConfinementError(f"capset: {os.strerror(ctypes.get_errno())}")


def _restrict_writes(writable: Sequence[Path]) -> int:
    """Landlock: writes only beneath ``writable`` (and to /dev/null); 0 where unavailable."""
    try:
        import landlockpy
        from landlockpy import AccessFS, AccessNet
    except ImportError:
        return 0
    abi = landlockpy.abi_version()
    if abi == 0:
        return 0
    write = (
        AccessFS.WRITE_FILE
        | AccessFS.TRUNCATE
        | AccessFS.REMOVE_DIR
        | AccessFS.REMOVE_FILE
        | AccessFS.MAKE_CHAR
        | AccessFS.MAKE_DIR
        | AccessFS.MAKE_REG
        | AccessFS.MAKE_SOCK
        | AccessFS.MAKE_FIFO
        | AccessFS.MAKE_BLOCK
        | AccessFS.MAKE_SYM
        | AccessFS.REFER
    )
    # The network is left alone (hooks, the Kubernetes API): only these writes are handled.
    with landlockpy.Ruleset(handled_fs=write, handled_net=AccessNet.NONE) as ruleset:
        for path in [*writable, Path("/dev/null")]:
            # A file takes only a file's rights (the kernel refuses the others there).
            rights = write if path.is_dir() else AccessFS.WRITE_FILE | AccessFS.TRUNCATE
            ruleset.allow_path(path, rights)
        ruleset.restrict(no_new_privs=True)
    return abi


def confine(
    user: FrontUser, writable: Sequence[Path], unreachable: Sequence[str] = ()
) -> Confinement:
    """Make this process the unprivileged front (see the module's docstring); it must not be
    able to use the engine's usual sockets, nor those in ``unreachable``."""
    if os.geteuid() != 0:
        raise ConfinementError("confining a front needs root, to give it up")
    os.setgroups([])
    os.setresgid(user.gid, user.gid, user.gid)
    _drop_capabilities()
    os.setresuid(user.uid, user.uid, user.uid)
    _zero_capability_sets()
    _prctl(_PR_SET_NO_NEW_PRIVS, 1, "cannot set no_new_privs")
    abi = _restrict_writes(writable)
    try:
        rules = seccomp.install()
    except seccomp.SeccompUnavailable as error:
        log.warning("the front runs without a seccomp filter: %s", error)
        rules = 0
    for path in (*ENGINE_SOCKETS, *unreachable):
        with contextlib.suppress(OSError):
            if os.path.exists(path) and os.access(path, os.W_OK):
                raise ConfinementError(
                    f"the front's user {user.name} can use {path}: it would hold the engine; "
                    "choose a --user outside the engine's group"
                )
    return Confinement(abi, rules)


def writable_dir(path: Path, user: FrontUser) -> Path:
    """``path`` made (as root, 0700) and given to the front's user; for its state and logs."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chown(path, user.uid, user.gid)
    return path


def writable_file(path: Path, user: FrontUser) -> Path:
    """``path`` created (0600) if missing and given to the front's user (an audit log); its
    folder too when it has to be made, so that a rotated log can be made anew there."""
    if not path.parent.exists():
        writable_dir(path.parent, user)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    os.chown(path, user.uid, user.gid)
    return path
