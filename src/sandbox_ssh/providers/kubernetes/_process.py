"""A process in a pod, over the exec subresource's WebSocket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp

from ...hooks import OutputStream, ProcessSpec, SandboxError, TerminalSize
from .. import _posix
from ._channels import (
    STATUS,
    STDERR,
    STDIN,
    STDOUT,
    V5_PROTOCOL,
    ExitStatus,
    close_message,
    data_message,
    parse_status,
    resize_message,
    split_message,
)
from ._client import KubeClients, negotiated_protocol, open_exec
from ._login import as_user_argv, login_argv, login_preamble

log = logging.getLogger("sandbox_ssh.kubernetes")

# The status channel comes last; a stream that ends without it is a lost process.
_NO_STATUS = ExitStatus(None, "the API server closed the stream without an exit status")
_warned_v4 = False


@dataclass(frozen=True)
class PodTarget:
    clients: KubeClients
    namespace: str
    pod: str
    container: str

    @property
    def sandbox_id(self) -> str:
        return f"{self.namespace}/{self.pod}"


class ExecStream:
    """One exec WebSocket: output by stream, the exit status once it ends."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.v5 = negotiated_protocol(ws) == V5_PROTOCOL
        self.status: ExitStatus | None = None
        self.ended = asyncio.Event()

    async def receive(self) -> tuple[OutputStream, bytes] | None:
        """The next output, or None once the stream has ended."""
        while not self.ended.is_set():
            message = await self.ws.receive()
            if message.type is aiohttp.WSMsgType.BINARY:
                channel, data = split_message(message.data)
                if channel == STDOUT and data:
                    return OutputStream.STDOUT, data
                if channel == STDERR and data:
                    return OutputStream.STDERR, data
                if channel == STATUS and data:
                    self.status = parse_status(data)
                continue
            if message.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.PING):
                continue
            self.ended.set()  # CLOSE, CLOSED or ERROR
        return None

    async def send(self, channel: int, data: bytes) -> bool:
        if self.ws.closed:
            return False
        try:
            await self.ws.send_bytes(data_message(channel, data))
        except (ConnectionError, RuntimeError, aiohttp.ClientError):
            return False
        return True

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        self.ended.set()


async def run_short(
    target: PodTarget, argv: Sequence[str], within: float = _posix.SHORT_TIMEOUT
) -> tuple[ExitStatus, bytes]:
    """Run a helper to its end: its exit status and stdout (bounded: SandboxError)."""
    stream = ExecStream(
        await open_exec(
            target.clients, target.namespace, target.pod, target.container, argv, tty=False
        )
    )
    try:
        if stream.v5:
            await stream.ws.send_bytes(close_message(STDIN))
        output = await _posix.collect_short(stream.receive, within=within)
    finally:
        await stream.close()
    return stream.status or _NO_STATUS, output


class KubernetesProcess:
    """Implements :class:`sandbox_ssh.hooks.SandboxProcess` for a process in a pod."""

    def __init__(
        self,
        target: PodTarget,
        hangup_grace: float,
        answer_timeout: float = _posix.PID_LINE_TIMEOUT,
    ) -> None:
        self._target = target
        self._hangup_grace = hangup_grace
        self._answer_timeout = answer_timeout
        self._stream: ExecStream | None = None
        self._pending: list[tuple[OutputStream, bytes]] = []
        self._pid: int | None = None
        self._uid = 0
        self._gid = 0
        self._tty = False
        self._stdin_closed = False
        self._login: _posix.Login | None = None

    @property
    def pid(self) -> int | None:
        return self._pid

    async def start(self, spec: ProcessSpec) -> None:
        self._tty = spec.terminal is not None
        self._uid, self._gid = spec.user.uid, spec.user.gid
        target = self._target
        self._stream = ExecStream(
            await open_exec(
                target.clients,
                target.namespace,
                target.pod,
                target.container,
                login_argv(spec.terminal),
                tty=self._tty,
            )
        )
        # The wrapper's PID line is the sandbox's to send: waited for (bounded) after the
        # start's slot is free; stdin waits for the preamble that follows it.
        self._login = _posix.Login(self._log_in(spec))

    async def _log_in(self, spec: ProcessSpec) -> None:
        assert self._stream is not None
        if not await self._read_pid():
            return  # the wrapper never ran: what it said is pending as stderr
        preamble = login_preamble(
            spec.user.uid, spec.user.gid, spec.workdir, spec.env, list(spec.argv)
        )
        await self._stream.send(STDIN, preamble)
        if not self._stream.v5:
            _warn_v4_once()

    async def _started(self) -> None:
        """Wait for the login (SandboxError when the sandbox never answers)."""
        if self._login is not None:
            await self._login.done()

    async def _started_quietly(self) -> bool:
        return self._login is None or await self._login.succeeded()

    async def _read_pid(self) -> bool:
        assert self._stream is not None
        self._pid, self._pending = await _posix.read_pid_line(
            self._stream.receive, self._answer_timeout
        )
        return self._pid is not None

    async def write_stdin(self, data: bytes) -> None:
        if not await self._started_quietly() or self._stdin_closed or self._stream is None:
            return
        if not await self._stream.send(STDIN, data):
            self._stdin_closed = True  # the process is gone; output will say why

    async def close_stdin(self) -> None:
        if not await self._started_quietly() or self._stdin_closed or self._stream is None:
            return
        self._stdin_closed = True
        if self._stream.v5 and not self._stream.ws.closed:
            with contextlib.suppress(ConnectionError, RuntimeError, aiohttp.ClientError):
                await self._stream.ws.send_bytes(close_message(STDIN))

    async def read_output(self) -> tuple[OutputStream, bytes] | None:
        await self._started()
        if self._pending:
            return self._pending.pop(0)
        if self._stream is None:
            return None
        chunk = await self._stream.receive()
        if chunk is not None and self._tty:
            return OutputStream.STDOUT, chunk[1]
        return chunk

    async def wait(self) -> int:
        assert self._stream is not None
        await self._stream.ended.wait()
        status = self._stream.status or _NO_STATUS
        if status.code is not None:
            return status.code
        raise SandboxError(f"the process failed: {status.failure}")

    async def resize(self, size: TerminalSize) -> None:
        if await self._started_quietly():
            await self._resize(size)

    async def _resize(self, size: TerminalSize) -> None:
        if self._tty and self._stream is not None and not self._stream.ws.closed:
            with contextlib.suppress(ConnectionError, RuntimeError, aiohttp.ClientError):
                await self._stream.ws.send_bytes(resize_message(size))

    async def signal(self, signal_name: str) -> None:
        if await self._started_quietly() and self._pid is not None:
            await self._control(_posix.signal_argv(self._pid, signal_name))

    async def hangup(self) -> None:
        if not await self._started_quietly() or self._pid is None:
            return
        # As the session's user, who may read its own processes' /proc/PID/fd.
        argv = _posix.hangup_argv(self._pid, self._hangup_grace)
        await self._control(as_user_argv(self._uid, self._gid, argv), self._hangup_grace)

    async def _control(self, argv: Sequence[str], grace: float = 0) -> None:
        try:
            await run_short(self._target, argv, _posix.SHORT_TIMEOUT + grace)
        except SandboxError as error:
            log.warning("control exec in %s failed: %s", self._target.sandbox_id, error)

    async def close(self) -> None:
        if self._login is not None:
            self._login.close()
        if self._stream is not None:
            await self._stream.close()


def _warn_v4_once() -> None:
    global _warned_v4
    if not _warned_v4:
        _warned_v4 = True
        log.warning(
            "the Kubernetes API server speaks only v4.channel.k8s.io: a client's EOF cannot "
            "reach processes (commands that read stdin to its end will wait); Kubernetes 1.30+ "
            "offers v5"
        )
