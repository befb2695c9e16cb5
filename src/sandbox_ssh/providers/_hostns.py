"""Reaching into a sandbox's namespaces from the gateway host (Linux).

Forwarded connections must be dialled, and listeners bound, inside the
sandbox, never from the gateway's own network or filesystem. For a runtime
on the same host this is done natively:

* TCP: a socket is created by a short-lived thread that has entered the
  sandbox's network namespace (setns affects only the calling thread, and a
  socket stays in the namespace it was created in);
* unix sockets: the path is resolved by ``openat2(RESOLVE_IN_ROOT)`` against
  the sandbox's root, so ``..`` and symlinks (even absolute ones) cannot leave
  it, with the thread's filesystem credentials set to the session user so
  that the sandbox's permissions apply; the socket is then reached through
  ``/proc/self/fd/N``.

Requires Linux >= 5.6 and, for the gateway, CAP_SYS_ADMIN and host PID
visibility (root on the Docker host). Nothing is required of the image.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import socket
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")

_CLONE_NEWNET = 0x40000000
_SYS_OPENAT2 = 437  # the same on every architecture
_SYS_SETGROUPS = {"x86_64": 116, "aarch64": 159, "arm64": 159}.get(platform.machine())
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_IN_ROOT = 0x10
_O_PATH = getattr(os, "O_PATH", 0o10000000)

_libc = ctypes.CDLL(None, use_errno=True)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


class NamespaceError(OSError):
    """Entering the sandbox's namespaces is not possible from this gateway."""


def _check(result: int, what: str) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")
    return result


def _in_thread(work: Callable[[], T]) -> T:
    """Run ``work`` on a fresh thread that ends afterwards, so no changed state outlives it."""
    outcome: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(work())
        except BaseException as error:  # re-raised in the caller
            failure.append(error)

    thread = threading.Thread(target=run, name="sandbox-ssh-ns", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]


def socket_in_netns(pid: int, family: int, kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A new socket in the network namespace of host process ``pid``. Blocking; run off-loop."""

    def work() -> socket.socket:
        try:
            target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as error:
            raise NamespaceError(
                error.errno, f"cannot open the sandbox's network namespace: {error.strerror}"
            ) from error
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            if _libc.setns(target, _CLONE_NEWNET) != 0:
                code = ctypes.get_errno()
                raise NamespaceError(
                    code, f"cannot enter the sandbox's network namespace: {os.strerror(code)}"
                )
            try:
                return socket.socket(family, kind)
            finally:
                if _libc.setns(own, _CLONE_NEWNET) != 0:
                    # The thread is about to end anyway; nothing else runs on it.
                    pass
        finally:
            os.close(own)
            os.close(target)

    return _in_thread(work)


def _open_in_root(root_fd: int, path: str, flags: int) -> int:
    how = _OpenHow(flags | os.O_CLOEXEC, 0, _RESOLVE_IN_ROOT | _RESOLVE_NO_MAGICLINKS)
    result = _libc.syscall(
        _SYS_OPENAT2, root_fd, os.fsencode(path), ctypes.byref(how), ctypes.sizeof(how)
    )
    if result < 0:
        code = ctypes.get_errno()
        if code == errno.ENOSYS:
            raise NamespaceError(code, "the kernel lacks openat2 (Linux 5.6 or newer is needed)")
        raise OSError(code, os.strerror(code), path)
    return int(result)


def _as_user(uid: int, gid: int, groups: Sequence[int], work: Callable[[], T]) -> T:
    """Run ``work`` with this thread's filesystem credentials set to uid/gid/groups."""

    def run() -> T:
        if uid != 0:
            if _SYS_SETGROUPS is None:
                raise NamespaceError(
                    errno.ENOSYS, f"no setgroups syscall known for {platform.machine()}"
                )
            # The raw syscall changes only this thread; glibc's wrapper changes them all.
            array = (ctypes.c_uint32 * max(1, len(groups)))(*(groups or [gid]))
            _check(_libc.syscall(_SYS_SETGROUPS, len(groups) or 1, array), "setgroups")
            _libc.setfsgid(gid)
            _libc.setfsuid(uid)
        return work()

    return _in_thread(run)


def _split_parent(path: str) -> tuple[str, str]:
    parent, _, name = path.rstrip("/").rpartition("/")
    if not name or name in (".", ".."):
        raise OSError(errno.EINVAL, "not a socket path", path)
    return parent or "/", name


def connect_unix_in_root(
    pid: int, path: str, uid: int, gid: int, groups: Sequence[int] = ()
) -> socket.socket:
    """A unix socket connected to ``path`` as seen inside the sandbox, with the user's rights."""

    def work() -> socket.socket:
        root = _open_root(pid)
        try:
            target = _open_in_root(root, path, _O_PATH)
            try:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.connect(f"/proc/self/fd/{target}")
                except BaseException:
                    sock.close()
                    raise
                return sock
            finally:
                os.close(target)
        finally:
            os.close(root)

    return _as_user(uid, gid, groups, work)


def bind_unix_in_root(
    pid: int, path: str, uid: int, gid: int, groups: Sequence[int] = ()
) -> socket.socket:
    """A listening unix socket created at ``path`` inside the sandbox, owned by the user."""
    parent, name = _split_parent(path)

    def work() -> socket.socket:
        root = _open_root(pid)
        try:
            directory = _open_in_root(root, parent, _O_PATH | os.O_DIRECTORY)
            try:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.bind(f"/proc/self/fd/{directory}/{name}")
                    sock.listen(128)
                except BaseException:
                    sock.close()
                    raise
                return sock
            finally:
                os.close(directory)
        finally:
            os.close(root)

    return _as_user(uid, gid, groups, work)


def unlink_in_root(pid: int, path: str, uid: int, gid: int, groups: Sequence[int] = ()) -> None:
    """Remove a socket file the gateway bound inside the sandbox."""
    parent, name = _split_parent(path)

    def work() -> None:
        root = _open_root(pid)
        try:
            directory = _open_in_root(root, parent, _O_PATH | os.O_DIRECTORY)
            try:
                os.unlink(f"/proc/self/fd/{directory}/{name}")
            finally:
                os.close(directory)
        finally:
            os.close(root)

    _as_user(uid, gid, groups, work)


def read_file_in_root(pid: int, path: str, limit: int = 1 << 20) -> bytes:
    """Read a small file as the sandbox sees it (root's rights; for /etc/hosts and the like)."""

    def work() -> bytes:
        root = _open_root(pid)
        try:
            fd = _open_in_root(root, path, os.O_RDONLY)
            with os.fdopen(fd, "rb") as handle:
                return handle.read(limit)
        finally:
            os.close(root)

    return _in_thread(work)


def _open_root(pid: int) -> int:
    try:
        return os.open(f"/proc/{pid}/root", _O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as error:
        raise NamespaceError(
            error.errno, f"cannot reach the sandbox's filesystem: {error.strerror}"
        ) from error


def host_namespace_problem() -> str | None:
    """Why this process cannot enter other processes' namespaces, or None when it can."""
    if platform.system() != "Linux":
        return "forwarding needs a Linux gateway host"
    if os.geteuid() != 0:
        return "forwarding needs the gateway to run as root on the container host"
    try:
        socket_in_netns(os.getpid(), socket.AF_INET).close()
    except OSError as error:
        return f"forwarding needs CAP_SYS_ADMIN: {error.strerror or error}"
    return None
