"""Sockets inside a sandbox through a helper process, for runtimes that offer only exec."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Awaitable, Callable

from ...hooks import (
    ROOT_USER,
    BoundListener,
    OutputStream,
    ProcessSpec,
    Sandbox,
    SandboxError,
    SandboxProcess,
    UserInfo,
)
from ._frames import FrameReader, Kind, encode
from ._helper import HELPER

log = logging.getLogger("sandbox_ssh.stdio")

StartProcess = Callable[[Sandbox, ProcessSpec], Awaitable[SandboxProcess]]

# python3 runs the helper; without it, socat can still connect (without an up-front error).
_LAUNCH = r"""
if command -v python3 >/dev/null 2>&1; then exec python3 -c "$0" "$@"; fi
if [ "$1" = connect ] && command -v socat >/dev/null 2>&1; then
    if [ "$2" = unix ]; then target="UNIX-CONNECT:$3"; else target="TCP:$3:$4"; fi
    echo OK
    exec socat - "$target"
fi
echo "ERR the sandbox has neither python3 nor socat, which this kind of forwarding needs"
"""
_HELPER_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
_MAX_STATUS_LINE = 4096
# Bytes from the sandbox queued toward one forwarded connection before its stream waits.
_QUEUE_HIGH = 1 << 20
_QUEUE_LOW = 1 << 18


async def _status_line(process: SandboxProcess) -> tuple[str, bytes]:
    """The helper's first line (``OK ...`` or ``ERR reason``) and what followed it."""
    out, err = bytearray(), bytearray()
    while b"\n" not in out and len(out) < _MAX_STATUS_LINE:
        chunk = await process.read_output()
        if chunk is None:
            break
        (out if chunk[0] is OutputStream.STDOUT else err).extend(chunk[1])
    line, newline, rest = bytes(out).partition(b"\n")
    if not newline:
        said = " ".join((bytes(err) or line).decode(errors="replace").split())
        raise SandboxError(f"the sandbox's forwarding helper failed: {said or 'no answer'}")
    return line.decode(errors="replace").strip(), rest


class StdioNetwork:
    """Implements SandboxNetwork and AgentSocketHost with a helper started by ``start``."""

    def __init__(self, start: StartProcess) -> None:
        self._start = start
        self._tasks: set[asyncio.Task[None]] = set()

    def forwarding_problem(self) -> str | None:
        return None

    def _keep(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _helper(
        self, sandbox: Sandbox, user: UserInfo, *args: str
    ) -> tuple[SandboxProcess, str, bytes]:
        spec = ProcessSpec(
            argv=["/bin/sh", "-c", _LAUNCH, HELPER, *args],
            env=_HELPER_ENV,
            user=user,
            workdir="/",
        )
        process = await self._start(sandbox, spec)
        try:
            line, rest = await _status_line(process)
        except BaseException:
            await process.close()
            raise
        verdict, _, detail = line.partition(" ")
        if verdict != "OK":
            await process.close()
            raise SandboxError(detail or line or "the sandbox's forwarding helper failed")
        return process, detail, rest

    async def connect(self, sandbox: Sandbox, user: UserInfo, *target: str) -> socket.socket:
        process, _, early = await self._helper(sandbox, user, "connect", *target)
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        self._keep(_pump(process, ours, early))
        return theirs

    async def listen(self, sandbox: Sandbox, user: UserInfo, *where: str) -> BoundListener:
        process, bound, early = await self._helper(sandbox, user, "listen", *where)
        directory = tempfile.mkdtemp(prefix="sandbox-ssh-listen-")
        local_path = os.path.join(directory, "listener.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(local_path)
        listener.listen(128)
        listener.setblocking(False)
        mux = _Multiplexer(process, local_path)
        self._keep(mux.run(early))

        def cleanup() -> None:
            self._keep(process.close())  # the helper sees stdin end and removes its socket
            shutil.rmtree(directory, ignore_errors=True)

        kind = where[0]
        return BoundListener(
            sock=listener,
            cleanup=cleanup,
            path=bound if kind != "tcp" else "",
            port=int(bound) if kind == "tcp" and bound.isdigit() else 0,
        )

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # SandboxNetwork, for providers with nothing better

    async def connect_tcp(self, sandbox: Sandbox, host: str, port: int) -> socket.socket:
        return await self.connect(sandbox, ROOT_USER, "tcp", host, str(port))

    async def connect_unix(self, sandbox: Sandbox, path: str, user: UserInfo) -> socket.socket:
        return await self.connect(sandbox, user, "unix", path)

    async def listen_tcp(self, sandbox: Sandbox, host: str, port: int) -> BoundListener:
        return await self.listen(sandbox, ROOT_USER, "tcp", host, str(port))

    async def listen_unix(self, sandbox: Sandbox, path: str, user: UserInfo) -> BoundListener:
        return await self.listen(sandbox, user, "unix", path)

    async def listen_agent_socket(self, sandbox: Sandbox, user: UserInfo) -> BoundListener:
        return await self.listen(sandbox, user, "agent")


async def _pump(process: SandboxProcess, sock: socket.socket, early: bytes) -> None:
    """Relay one connection's bytes between ``sock`` and the helper's stdio."""
    loop = asyncio.get_running_loop()

    async def up() -> None:
        while data := await loop.sock_recv(sock, 65536):
            await process.write_stdin(data)
        await process.close_stdin()

    async def down() -> None:
        if early:
            await loop.sock_sendall(sock, early)
        while (chunk := await process.read_output()) is not None:
            if chunk[0] is OutputStream.STDOUT:
                await loop.sock_sendall(sock, chunk[1])
        sock.shutdown(socket.SHUT_WR)

    try:
        await asyncio.gather(up(), down())
    except (OSError, SandboxError) as error:
        log.debug("forwarded connection through the helper ended: %s", error)
    finally:
        sock.close()
        await process.close()


class _Multiplexer:
    """Turns the helper's frames into connections to a local listener, and back.

    Each connection has its own queue toward its socket, so one that is slow to read
    does not stall the others at once; a queue holds at most _QUEUE_HIGH bytes, and
    beyond that the helper's stream waits for it (the sandbox's own connections wait,
    and the gateway's memory stays bounded whatever the sandbox writes).
    """

    def __init__(self, process: SandboxProcess, local_path: str) -> None:
        self._process = process
        self._local_path = local_path
        self._conns: dict[int, socket.socket] = {}
        self._outgoing: dict[int, asyncio.Queue[bytes | None]] = {}
        self._queued: dict[int, int] = {}  # bytes waiting in each connection's queue
        self._room: dict[int, asyncio.Event] = {}
        self._sent_eof: set[int] = set()  # the local side will send no more
        self._got_eof: set[int] = set()  # the sandbox side will send no more
        self._tasks: set[asyncio.Task[None]] = set()
        self._write_lock = asyncio.Lock()

    async def _send(self, kind: Kind, conn_id: int, data: bytes = b"") -> None:
        async with self._write_lock:
            await self._process.write_stdin(encode(kind, conn_id, data))

    async def run(self, early: bytes) -> None:
        frames = FrameReader()
        try:
            data = early
            while True:
                for kind, conn_id, payload in frames.feed(data):
                    await self._handle(kind, conn_id, payload)
                chunk = await self._process.read_output()
                if chunk is None:
                    return
                data = chunk[1] if chunk[0] is OutputStream.STDOUT else b""
        except (OSError, ValueError, SandboxError) as error:
            log.warning("forwarding helper stream failed: %s", error)
        finally:
            for task in self._tasks:
                task.cancel()
            for sock in self._conns.values():
                sock.close()
            await self._process.close()

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, kind: Kind, conn_id: int, payload: bytes) -> None:
        if kind is Kind.OPEN:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                await asyncio.get_running_loop().sock_connect(sock, self._local_path)
            except OSError:
                sock.close()
                await self._send(Kind.CLOSE, conn_id)
                return
            self._conns[conn_id] = sock
            self._outgoing[conn_id] = asyncio.Queue()
            self._queued[conn_id] = 0
            self._room[conn_id] = asyncio.Event()
            self._spawn(self._read_conn(conn_id, sock))
            self._spawn(self._write_conn(conn_id, sock, self._outgoing[conn_id]))
        elif kind is Kind.CLOSE:
            self._drop(conn_id)
        elif conn_id in self._outgoing:
            self._outgoing[conn_id].put_nowait(payload if kind is Kind.DATA else None)
            self._queued[conn_id] += len(payload)
            if self._queued[conn_id] > _QUEUE_HIGH:
                room = self._room[conn_id]
                room.clear()
                await room.wait()

    def _drop(self, conn_id: int) -> None:
        sock = self._conns.pop(conn_id, None)
        if sock is not None:
            sock.close()
        queue = self._outgoing.pop(conn_id, None)
        if queue is not None:
            queue.put_nowait(None)
        self._queued.pop(conn_id, None)
        room = self._room.pop(conn_id, None)
        if room is not None:
            room.set()  # nothing more is queued for it: the stream goes on
        self._sent_eof.discard(conn_id)
        self._got_eof.discard(conn_id)

    def _close_if_done(self, conn_id: int) -> None:
        if conn_id in self._sent_eof and conn_id in self._got_eof:
            self._drop(conn_id)

    async def _write_conn(
        self, conn_id: int, sock: socket.socket, queue: asyncio.Queue[bytes | None]
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            while (data := await queue.get()) is not None:
                await loop.sock_sendall(sock, data)
                if conn_id in self._queued:
                    self._queued[conn_id] -= len(data)
                    if self._queued[conn_id] < _QUEUE_LOW:
                        self._room[conn_id].set()
            if self._conns.get(conn_id) is sock:
                sock.shutdown(socket.SHUT_WR)
                self._got_eof.add(conn_id)
                self._close_if_done(conn_id)
        except OSError:
            await self._abort(conn_id, sock)

    async def _read_conn(self, conn_id: int, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            while data := await loop.sock_recv(sock, 65536):
                await self._send(Kind.DATA, conn_id, data)
            await self._send(Kind.EOF, conn_id)
            self._sent_eof.add(conn_id)
            self._close_if_done(conn_id)
        except OSError:
            await self._abort(conn_id, sock)

    async def _abort(self, conn_id: int, sock: socket.socket) -> None:
        """The local connection failed: drop it and tell the helper (once)."""
        if self._conns.get(conn_id) is sock:
            self._drop(conn_id)
            with contextlib.suppress(OSError, SandboxError):
                await self._send(Kind.CLOSE, conn_id)
