"""The front's processes: stdio on descriptors the broker sent, control through the broker.

A runtime-path process is the same ``RuntimeProcess`` a gateway with the Docker
provider runs (pipes or the terminal's master; its exit from the broker's shim). A
process of Docker's exec API is its stream's socket, framed as Docker frames it, with
its exit status, resize, signals and hang-up asked of the broker, which alone holds
the engine's API.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import signal
import socket
from typing import Any

from ...hooks import OutputStream, SandboxError, TerminalSize
from .. import _posix
from .._runtime._launcher import ExitInfo, Launched
from .._runtime._process import RuntimeProcess
from ..docker._exec import StreamFrames
from ._client import HELPER_GONE, BrokerClient, BrokerGone

_READ_SIZE = 1 << 18


class BrokeredControl:
    """``ProcessControl`` for runtime-path processes: the broker's shim does the work."""

    def __init__(self, client: BrokerClient) -> None:
        self._client = client

    def signal(self, request_id: int, signum: int) -> None:
        name = signal.Signals(signum).name.removeprefix("SIG")
        self._client.send_only("signal", process=request_id, signal=name)

    async def hangup(self, request_id: int) -> None:
        with contextlib.suppress(SandboxError):
            await self._client.request("hangup", process=request_id)

    def release(self, request_id: int) -> None:
        self._client.send_only("release", process=request_id)


async def _exit_info(client: BrokerClient, handle: int) -> ExitInfo:
    try:
        result, _ = await client.request("wait", process=handle)
    except BrokerGone:
        raise SandboxError(f"lost the process's exit status: {HELPER_GONE}") from None
    return ExitInfo(result.get("code"), result.get("signal"), bool(result.get("core")))


def runtime_process(client: BrokerClient, handle: int, tty: bool, fds: list[int]) -> RuntimeProcess:
    """A runtime-path process from the broker's descriptors: [master], or stdin, out, err."""
    exited: asyncio.Future[ExitInfo] = asyncio.ensure_future(_exit_info(client, handle))
    if tty:
        (master,) = fds
        launched = Launched(handle, 0, exited, master=master)
    else:
        stdin, stdout, stderr = fds
        launched = Launched(handle, 0, exited, stdin=stdin, stdout=stdout, stderr=stderr)
    return RuntimeProcess(BrokeredControl(client), launched)


class ExecStreamProcess:
    """Implements :class:`sandbox_ssh.hooks.SandboxProcess` over an exec's stream socket."""

    def __init__(self, client: BrokerClient, handle: int, tty: bool) -> None:
        self._client = client
        self._handle = handle
        self._tty = tty
        self._sock: socket.socket | None = None
        self._frames = StreamFrames(tty)
        self._pending: collections.deque[tuple[OutputStream, bytes]] = collections.deque()
        self._ended = False
        self._stdin_closed = False
        self._closed = False
        self._exited = False
        # The broker reads the PID line the sandbox writes first, then sends the stream:
        # the sandbox's to answer, so waited for outside the start's slot.
        self._login = _posix.Login(self._log_in())

    async def _log_in(self) -> None:
        result, fds = await self._client.request("login", process=self._handle)
        self._sock = socket.socket(fileno=fds[0])
        self._sock.setblocking(False)
        if self._closed:
            self._sock.close()
            return
        for stream, data in result.get("early") or []:
            self._pending.append((OutputStream(stream), base64.b64decode(data)))
        self._frames = StreamFrames(self._tty, base64.b64decode(result.get("remainder") or ""))
        if not result.get("pid"):
            self._stdin_closed = True  # the wrapper never ran: what it said is pending

    async def _started(self) -> bool:
        return await self._login.succeeded()

    async def write_stdin(self, data: bytes) -> None:
        # Held back until the PID line: a terminal would echo typed-ahead input before it.
        if not await self._started() or self._stdin_closed or self._sock is None:
            return
        try:
            await asyncio.get_running_loop().sock_sendall(self._sock, data)
        except OSError:
            self._stdin_closed = True  # the process is gone; output will say why

    async def close_stdin(self) -> None:
        if not await self._started() or self._stdin_closed or self._sock is None:
            return
        self._stdin_closed = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_WR)

    async def read_output(self) -> tuple[OutputStream, bytes] | None:
        await self._login.done()
        loop = asyncio.get_running_loop()
        while not self._pending:
            if self._ended or self._sock is None:
                return None
            try:
                data = await loop.sock_recv(self._sock, _READ_SIZE)
            except OSError:
                data = b""
            if not data:
                self._ended = True
                continue
            self._pending.extend(self._frames.feed(data))
        return self._pending.popleft()

    async def wait(self) -> int:
        try:
            result, _ = await self._client.request("wait", process=self._handle)
        except BrokerGone:
            raise SandboxError(f"lost the process's exit status: {HELPER_GONE}") from None
        self._exited = True
        code: Any = result.get("code")
        return int(code) if code is not None else 255

    async def resize(self, size: TerminalSize) -> None:
        if self._tty and await self._started():
            with contextlib.suppress(SandboxError):
                await self._client.request(
                    "resize", process=self._handle, cols=size.cols, rows=size.rows
                )

    async def signal(self, signal_name: str) -> None:
        if await self._started():
            with contextlib.suppress(SandboxError):
                await self._client.request("signal", process=self._handle, signal=signal_name)

    async def hangup(self) -> None:
        """The broker hangs the session up, then forgets the process (as the shim does)."""
        await self._close_stream()
        with contextlib.suppress(SandboxError):
            await self._client.request("hangup", process=self._handle)

    async def close(self) -> None:
        await self._close_stream()
        if self._exited or not await self._started():
            # Nothing left to hang up: the broker may forget it. A process still running
            # is hung up next (the session's rule), which ends it there.
            self._client.send_only("release", process=self._handle)

    async def _close_stream(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._sock is not None:
            self._sock.close()
