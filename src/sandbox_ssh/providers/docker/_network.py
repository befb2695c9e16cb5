"""Sockets inside a Docker sandbox, made from the gateway host through its namespaces."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import secrets
import socket
from collections.abc import Callable

import aiodocker

from ...hooks import BoundListener, Sandbox, SandboxError, UserInfo
from .. import _hostns
from .._threads import SandboxTimeout
from ._client import runtime_errors

_LOCALHOST = ("127.0.0.1", "::1")
_INIT_PID_CACHE = 4096


def _family(address: str) -> int:
    return socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET


def _reason(error: OSError) -> str:
    return error.strerror or str(error)


def parse_hosts(text: str, name: str) -> list[str]:
    """Addresses for ``name`` in an /etc/hosts file, IPv4 first."""
    found: list[str] = []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and name.lower() in (f.lower() for f in fields[1:]):
            with contextlib.suppress(ValueError):
                ipaddress.ip_address(fields[0])
                found.append(fields[0])
    return sorted(found, key=lambda a: _family(a) == socket.AF_INET6)


# Addresses tried for one name: a hosts file may list many; a few are plenty.
MAX_ADDRESSES = 4


async def connect_first(
    candidates: list[tuple[socket.socket, str]], host: str, port: int
) -> socket.socket:
    """Connect the first of ``candidates`` that takes it; the others are closed."""
    last_error = "no address"
    loop = asyncio.get_running_loop()
    for index, (sock, address) in enumerate(candidates):
        try:
            await loop.sock_connect(sock, (address, port))
        except OSError as error:
            sock.close()
            last_error = _reason(error)
            continue
        except BaseException:
            for other, _ in candidates[index:]:
                other.close()
            raise
        for other, _ in candidates[index + 1 :]:
            other.close()
        return sock
    raise SandboxError(f"connect to {host} port {port} failed: {last_error}")


class DockerNetwork:
    """Implements :class:`sandbox_ssh.hooks.SandboxNetwork` for containers on this host."""

    def __init__(self, docker: Callable[[], aiodocker.Docker], is_local: bool) -> None:
        self._docker = docker
        self._is_local = is_local
        self._problem: str | bool | None = False  # False: not checked yet
        # Container ID -> (init PID, its start time): a forward or a start then skips the
        # engine round trip while that init lives (checked in /proc, not trusted blindly).
        self._init_pids: collections.OrderedDict[str, tuple[int, str]] = collections.OrderedDict()

    def forwarding_problem(self) -> str | None:
        if self._problem is False:
            if not self._is_local:
                self._problem = (
                    "forwarding needs the gateway on the Docker host "
                    "(DOCKER_HOST is not a local socket)"
                )
            else:
                self._problem = _hostns.host_namespace_problem()
        assert self._problem is not True
        return self._problem

    async def _pid(self, sandbox: Sandbox) -> int:
        problem = self.forwarding_problem()
        if problem:
            raise SandboxError(problem)
        pid = await self._init_pid(sandbox.id)
        if pid <= 0:
            raise SandboxError("the sandbox is not running")
        return pid

    async def _init_pid(self, container_id: str) -> int:
        """The container's init PID on this host, 0 when it is not running."""
        cached = self._init_pids.get(container_id)
        if cached is not None and _hostns.process_start_time(cached[0]) == cached[1]:
            self._init_pids.move_to_end(container_id)
            return cached[0]
        with runtime_errors():
            info = await self._docker().containers.container(container_id).show()
        pid = int((info.get("State") or {}).get("Pid") or 0)
        started = _hostns.process_start_time(pid) if pid > 0 else None
        if started is not None:
            self._init_pids[container_id] = (pid, started)
            self._init_pids.move_to_end(container_id)
            while len(self._init_pids) > _INIT_PID_CACHE:
                self._init_pids.popitem(last=False)
        return pid

    async def check_account_files(self, container_id: str) -> None:
        """Refuse a sandbox whose /etc/passwd or /etc/group dockerd must not read.

        For every exec with a user, dockerd itself parses those two files of the
        container, without a bound: a FIFO there blocks it, /dev/zero grows it until the
        kernel kills it (Docker 20.10, seen here). Checked from the host first, with the
        gateway's own bounded reader, where the gateway runs there; a remote engine
        cannot be protected this way (SECURITY.md).
        """
        if self.forwarding_problem():
            return
        pid = await self._init_pid(container_id)
        if pid <= 0:
            return  # not running: the exec is refused anyway
        for path in ("/etc/passwd", "/etc/group"):
            await _hostns.read_checked_file(pid, path)

    async def _addresses(self, pid: int, host: str) -> list[str]:
        try:
            ipaddress.ip_address(host)
            return [host]
        except ValueError:
            pass
        if host.lower() == "localhost":
            return list(_LOCALHOST)
        try:
            hosts = await _hostns.read_file_in_root(pid, "/etc/hosts")
        except (_hostns.UnsafeSandboxFile, SandboxTimeout) as error:
            raise SandboxError(f"cannot resolve {host}: {error}") from None
        except OSError:
            hosts = b""
        found = parse_hosts(hosts.decode(errors="replace"), host)
        if not found:
            raise SandboxError(f"cannot resolve {host} inside the sandbox")
        return found

    async def tcp_sockets(self, sandbox: Sandbox, host: str) -> list[tuple[socket.socket, str]]:
        """Unconnected TCP sockets in the sandbox's network namespace, one per address that
        ``host`` has there (IPv4 first, at most ``MAX_ADDRESSES``): a socket stays in the
        namespace it was made in, wherever it is connected from (the broker's front
        connects them, so that no slow peer holds the broker)."""
        pid = await self._pid(sandbox)
        made: list[tuple[socket.socket, str]] = []
        try:
            for address in (await self._addresses(pid, host))[:MAX_ADDRESSES]:
                sock = await _hostns.socket_in_netns(pid, _family(address))
                sock.setblocking(False)
                made.append((sock, address))
        except OSError as error:
            for sock, _ in made:
                sock.close()
            raise SandboxError(_reason(error)) from error
        return made

    async def connect_tcp(self, sandbox: Sandbox, host: str, port: int) -> socket.socket:
        return await connect_first(await self.tcp_sockets(sandbox, host), host, port)

    async def connect_unix(self, sandbox: Sandbox, path: str, user: UserInfo) -> socket.socket:
        pid = await self._pid(sandbox)
        try:
            sock = await _hostns.connect_unix_in_root(pid, path, user.uid, user.gid)
        except OSError as error:
            raise SandboxError(f"connect to {path} failed: {_reason(error)}") from error
        sock.setblocking(False)
        return sock

    async def listen_tcp(self, sandbox: Sandbox, host: str, port: int) -> BoundListener:
        pid = await self._pid(sandbox)
        try:
            sock = await _hostns.socket_in_netns(pid, _family(host))
        except OSError as error:
            raise SandboxError(_reason(error)) from error
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(128)
        except OSError as error:
            sock.close()
            raise SandboxError(f"cannot listen on {host} port {port}: {_reason(error)}") from error
        sock.setblocking(False)
        return BoundListener(sock)

    async def listen_unix(self, sandbox: Sandbox, path: str, user: UserInfo) -> BoundListener:
        pid = await self._pid(sandbox)
        try:
            sock = await _hostns.bind_unix_in_root(pid, path, user.uid, user.gid)
        except OSError as error:
            raise SandboxError(f"cannot listen on {path}: {_reason(error)}") from error
        sock.setblocking(False)

        def cleanup() -> None:
            with contextlib.suppress(OSError):
                _hostns.unlink_in_root(pid, path, user.uid, user.gid)

        return BoundListener(sock, cleanup, path)

    async def listen_agent_socket(self, sandbox: Sandbox, user: UserInfo) -> BoundListener:
        pid = await self._pid(sandbox)
        name = f"sandbox-ssh-agent-{secrets.token_hex(8)}"
        try:
            sock, path = await _hostns.make_agent_socket(pid, user.uid, user.gid, name)
        except OSError as error:
            raise SandboxError(f"cannot make the agent socket in /tmp: {_reason(error)}") from error
        sock.setblocking(False)

        def cleanup() -> None:
            with contextlib.suppress(OSError):
                _hostns.remove_agent_socket(pid, user.uid, user.gid, name)

        return BoundListener(sock, cleanup, path)
