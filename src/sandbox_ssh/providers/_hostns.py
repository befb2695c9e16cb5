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

import contextlib
import ctypes
import errno
import os
import platform
import socket
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import TypeVar

from ..hooks import SandboxError
from ._threads import SHARED, SandboxTimeout

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


# Every thread that works in a sandbox's namespaces counts against that sandbox's share.
BUDGET = SHARED
# Cleanups run from synchronous callbacks; they wait this long at most.
_CLEANUP_WAIT = 2.0
# The largest file read from a sandbox (passwd, group, hosts).
MAX_FILE_BYTES = 1 << 20


def _close_socket(result: object) -> None:
    if isinstance(result, socket.socket):
        result.close()
    elif isinstance(result, tuple) and result and isinstance(result[0], socket.socket):
        result[0].close()


async def _isolated(pid: int, work: Callable[[], T]) -> T:
    """Await ``work`` on a fresh thread within sandbox ``pid``'s share (see _threads)."""
    return await BUDGET.run(pid, work, discard=_close_socket)


def _isolated_blocking(work: Callable[[], T], wait: float | None = None) -> T:
    """Run ``work`` on a fresh thread and wait for it, at most ``wait`` seconds."""
    outcome: list[tuple[T | None, BaseException | None]] = []
    finished = threading.Event()

    def run() -> None:
        try:
            outcome.append((work(), None))
        except BaseException as error:  # handed to the caller
            outcome.append((None, error))
        finished.set()

    threading.Thread(target=run, name="sandbox-ssh-ns", daemon=True).start()
    if not finished.wait(wait):
        raise SandboxTimeout(f"the sandbox did not answer within {wait:g} s")
    result, error = outcome[0]
    if error is not None:
        raise error
    return result  # type: ignore[return-value]


def _socket_in_netns(pid: int, family: int) -> socket.socket:
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
            return socket.socket(family, socket.SOCK_STREAM)
        finally:
            # Best effort only: the thread ends right after, and nothing else runs on it.
            _libc.setns(own, _CLONE_NEWNET)
    finally:
        os.close(own)
        os.close(target)


async def socket_in_netns(pid: int, family: int) -> socket.socket:
    """A new TCP socket in the network namespace of host process ``pid``."""
    return await _isolated(pid, partial(_socket_in_netns, pid, family))


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


def _open_root(pid: int) -> int:
    try:
        return os.open(f"/proc/{pid}/root", _O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as error:
        raise NamespaceError(
            error.errno, f"cannot reach the sandbox's filesystem: {error.strerror}"
        ) from error


@contextlib.contextmanager
def _in_root(pid: int, path: str, flags: int) -> Iterator[int]:
    """A descriptor for ``path`` resolved inside the sandbox's root, closed afterwards."""
    root = _open_root(pid)
    try:
        fd = _open_in_root(root, path, flags)
    finally:
        os.close(root)
    try:
        yield fd
    finally:
        os.close(fd)


def _as_user(uid: int, gid: int, groups: Sequence[int]) -> None:
    """Set this thread's filesystem credentials; only ever called on an isolated thread."""
    if uid == 0:
        return
    if _SYS_SETGROUPS is None:
        raise NamespaceError(errno.ENOSYS, f"no setgroups syscall known for {platform.machine()}")
    # The raw syscall changes only this thread; glibc's wrapper changes them all.
    array = (ctypes.c_uint32 * max(1, len(groups)))(*(groups or [gid]))
    _check(_libc.syscall(_SYS_SETGROUPS, len(groups) or 1, array), "setgroups")
    _libc.setfsgid(gid)
    _libc.setfsuid(uid)


def _split_parent(path: str) -> tuple[str, str]:
    parent, _, name = path.rstrip("/").rpartition("/")
    if not name or name in (".", ".."):
        raise OSError(errno.EINVAL, "not a socket path", path)
    return parent or "/", name


def _unix_socket(setup: Callable[[socket.socket], None]) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        setup(sock)
    except BaseException:
        sock.close()
        raise
    return sock


def _connect_unix(pid: int, path: str, uid: int, gid: int, groups: Sequence[int]) -> socket.socket:
    _as_user(uid, gid, groups)
    with _in_root(pid, path, _O_PATH) as target:

        def connect(sock: socket.socket) -> None:
            # Non-blocking, as sshd's: a listener whose backlog is full answers EAGAIN at
            # once instead of holding this thread.
            sock.setblocking(False)
            sock.connect(f"/proc/self/fd/{target}")

        return _unix_socket(connect)


def _bind_unix(pid: int, path: str, uid: int, gid: int, groups: Sequence[int]) -> socket.socket:
    parent, name = _split_parent(path)
    _as_user(uid, gid, groups)
    with _in_root(pid, parent, _O_PATH | os.O_DIRECTORY) as directory:

        def bind_and_listen(sock: socket.socket) -> None:
            sock.bind(f"/proc/self/fd/{directory}/{name}")
            sock.listen(128)

        return _unix_socket(bind_and_listen)


def _unlink(pid: int, path: str, uid: int, gid: int, groups: Sequence[int]) -> None:
    parent, name = _split_parent(path)
    _as_user(uid, gid, groups)
    with _in_root(pid, parent, _O_PATH | os.O_DIRECTORY) as directory:
        os.unlink(f"/proc/self/fd/{directory}/{name}")


def _make_agent_socket(
    pid: int, uid: int, gid: int, groups: Sequence[int], name: str
) -> tuple[socket.socket, str]:
    """A listening socket at /tmp/NAME/agent.sock in the sandbox, dir 0700 and socket 0600,
    both created with the user's filesystem credentials, so owned by the user."""
    _as_user(uid, gid, groups)
    with _in_root(pid, "/tmp", _O_PATH | os.O_DIRECTORY) as tmp:
        os.mkdir(f"/proc/self/fd/{tmp}/{name}", 0o700)
    directory_path = f"/tmp/{name}"
    with _in_root(pid, directory_path, _O_PATH | os.O_DIRECTORY) as directory:
        socket_path = f"/proc/self/fd/{directory}/agent.sock"

        def bind_and_listen(sock: socket.socket) -> None:
            sock.bind(socket_path)
            os.chmod(socket_path, 0o600)
            sock.listen(16)

        return _unix_socket(bind_and_listen), f"{directory_path}/agent.sock"


def _remove_agent_socket(pid: int, uid: int, gid: int, groups: Sequence[int], name: str) -> None:
    _as_user(uid, gid, groups)
    with _in_root(pid, "/tmp", _O_PATH | os.O_DIRECTORY) as tmp:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"/proc/self/fd/{tmp}/{name}/agent.sock")
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(f"/proc/self/fd/{tmp}/{name}")


async def make_agent_socket(
    pid: int, uid: int, gid: int, name: str, groups: Sequence[int] = ()
) -> tuple[socket.socket, str]:
    """See _make_agent_socket; returns the socket and its path in the sandbox."""
    return await _isolated(pid, partial(_make_agent_socket, pid, uid, gid, groups, name))


def remove_agent_socket(
    pid: int, uid: int, gid: int, name: str, groups: Sequence[int] = ()
) -> None:
    """Remove what make_agent_socket created (blocking, and brief)."""
    _isolated_blocking(partial(_remove_agent_socket, pid, uid, gid, groups, name), _CLEANUP_WAIT)


class UnsafeSandboxFile(OSError):
    """A file in the sandbox that the gateway will not read; ``str()`` says which and why."""


_PROC_SUPER_MAGIC = 0x9FA0
_SYSFS_MAGIC = 0x62656572


class _StatFs(ctypes.Structure):
    _fields_ = [("f_type", ctypes.c_long), ("rest", ctypes.c_byte * 112)]


def _file_kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a directory"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _read_file(pid: int, path: str, limit: int) -> bytes:
    """The file's bytes, read without ever blocking on what the sandbox put there.

    The path is resolved to an O_PATH descriptor first, which opens nothing; only a
    regular file on a real filesystem (not procfs or sysfs) is then opened, with
    O_NONBLOCK, and read up to ``limit`` bytes.
    """
    with _in_root(pid, path, _O_PATH) as located:
        info = os.fstat(located)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeSandboxFile(f"{path} in the sandbox is {_file_kind(info.st_mode)}")
        statfs = _StatFs()
        if _libc.fstatfs(located, ctypes.byref(statfs)) == 0 and statfs.f_type in (
            _PROC_SUPER_MAGIC,
            _SYSFS_MAGIC,
        ):
            raise UnsafeSandboxFile(f"{path} in the sandbox is a kernel file")
        if info.st_size > limit:
            raise UnsafeSandboxFile(f"{path} in the sandbox is larger than {limit} bytes")
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
        fd = os.open(f"/proc/self/fd/{located}", flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped under us
            raise UnsafeSandboxFile(f"{path} in the sandbox changed while it was read")
        data = bytearray()
        while len(data) <= limit:
            chunk = os.read(fd, limit + 1 - len(data))
            if not chunk:
                return bytes(data)
            data += chunk
        raise UnsafeSandboxFile(f"{path} in the sandbox is larger than {limit} bytes")
    finally:
        os.close(fd)


async def connect_unix_in_root(
    pid: int, path: str, uid: int, gid: int, groups: Sequence[int] = ()
) -> socket.socket:
    """A unix socket connected to ``path`` as seen inside the sandbox, with the user's rights."""
    return await _isolated(pid, partial(_connect_unix, pid, path, uid, gid, groups))


async def bind_unix_in_root(
    pid: int, path: str, uid: int, gid: int, groups: Sequence[int] = ()
) -> socket.socket:
    """A listening unix socket created at ``path`` inside the sandbox, owned by the user."""
    return await _isolated(pid, partial(_bind_unix, pid, path, uid, gid, groups))


def unlink_in_root(pid: int, path: str, uid: int, gid: int, groups: Sequence[int] = ()) -> None:
    """Remove a socket file the gateway bound inside the sandbox (blocking, and brief)."""
    _isolated_blocking(partial(_unlink, pid, path, uid, gid, groups), _CLEANUP_WAIT)


async def read_file_in_root(pid: int, path: str, limit: int = MAX_FILE_BYTES) -> bytes:
    """Read a small regular file as the sandbox sees it (root's rights; /etc/hosts and the like).

    Raises UnsafeSandboxFile for anything else (a FIFO, a device, a kernel file, a giant
    file), and SandboxTimeout when the sandbox's share of threads is stuck.
    """
    return await _isolated(pid, partial(_read_file, pid, path, limit))


async def read_checked_file(pid: int, path: str) -> bytes:
    """A file the gateway (or dockerd) must parse: empty when missing, SandboxError when unsafe."""
    try:
        return await read_file_in_root(pid, path)
    except (UnsafeSandboxFile, SandboxTimeout) as error:
        raise SandboxError(f"{error}; the gateway will not read it") from None
    except OSError:
        return b""


def process_start_time(pid: int) -> str | None:
    """Field 22 of the host's /proc/PID/stat: tells a restarted container's new init from the
    old one that had the same PID. The kernel writes the file; the name field, which the
    process chooses, is skipped (after its last ')')."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read(4096).rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError, UnicodeDecodeError):
        return None


def host_namespace_problem() -> str | None:
    """Why this process cannot enter other processes' namespaces, or None when it can."""
    if platform.system() != "Linux":
        return "forwarding needs a Linux gateway host"
    if os.geteuid() != 0:
        return "forwarding needs the gateway to run as root on the container host"
    try:
        _isolated_blocking(partial(_socket_in_netns, os.getpid(), socket.AF_INET), 10.0).close()
    except OSError as error:
        return f"forwarding needs CAP_SYS_ADMIN: {error.strerror or error}"
    return None
