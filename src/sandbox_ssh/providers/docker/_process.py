"""A process started with Docker's exec API, and the traps that come with it."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable

import aiodocker
from aiodocker.stream import Stream

from ...hooks import OutputStream, ProcessSpec, TerminalSize
from .. import _posix
from ._aiodocker_internals import half_close, open_stream
from ._client import engine_error, runtime_errors
from ._exec import ExecControl

log = logging.getLogger("sandbox_ssh.docker")

# Docker's default detach keys (Ctrl-P Ctrl-Q) swallow Ctrl-P and kill TTY
# sessions, and they cannot be switched off; make them unreachable in practice.
DETACH_KEYS = "ctrl-^,ctrl-@,ctrl-^,ctrl-@,ctrl-^,ctrl-@"


class DockerProcess:
    """Implements :class:`sandbox_ssh.hooks.SandboxProcess` over one hijacked exec stream."""

    def __init__(
        self,
        docker: aiodocker.Docker,
        container_id: str,
        tty: bool,
        hangup_grace: float,
        answer_timeout: float = _posix.PID_LINE_TIMEOUT,
        before_exec: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._docker = docker
        self._container_id = container_id
        self._tty = tty
        self._hangup_grace = hangup_grace
        self._control: ExecControl | None = None
        self._stream: Stream | None = None
        self._login: _posix.Login | None = None
        self._answer_timeout = answer_timeout
        self._before_exec = before_exec
        self._pending: list[tuple[OutputStream, bytes]] = []
        self._stdin_closed = False
        self._closed = False

    @property
    def pid(self) -> int | None:
        """The PID inside the sandbox, or None when the runtime failed to start it."""
        return self._control.pid if self._control is not None else None

    async def start(self, spec: ProcessSpec, exec_user: str) -> None:
        container = self._docker.containers.container(self._container_id)
        try:
            execution = await container.exec(
                _posix.pid_report_argv(spec.argv, spec.terminal),
                stdin=True,
                tty=self._tty,
                user=exec_user,
                environment=dict(spec.env),
                workdir=spec.workdir,
                detach_keys=DETACH_KEYS,
            )
            self._control = ExecControl(
                self._docker,
                self._container_id,
                execution,
                tty=self._tty,
                exec_user=exec_user,
                hangup_grace=self._hangup_grace,
                before_exec=self._before_exec,
            )
            self._stream = execution.start(detach=False)
            await open_stream(self._stream)
        except aiodocker.DockerError as error:
            raise engine_error(error, "the sandbox refused the process") from error
        # The PID line is the sandbox's to send: waited for after the start's slot is free.
        self._login = _posix.Login(self._read_pid())

    async def _read_pid(self) -> None:
        assert self._stream is not None and self._control is not None
        stream = self._stream

        async def receive() -> tuple[OutputStream, bytes] | None:
            message = await stream.read_out()
            return None if message is None else (OutputStream(message.stream), message.data)

        self._control.pid, self._pending = await _posix.read_pid_line(receive, self._answer_timeout)

    async def _started(self) -> None:
        """Wait for the PID line (SandboxError when it never comes)."""
        if self._login is not None:
            with runtime_errors():
                await self._login.done()

    async def _started_quietly(self) -> bool:
        return self._login is None or await self._login.succeeded()

    async def write_stdin(self, data: bytes) -> None:
        # Held back until the PID line: a terminal would echo typed-ahead input before it.
        if not await self._started_quietly() or self._stdin_closed or self._stream is None:
            return
        try:
            await self._stream.write_in(data)
        except (ConnectionError, RuntimeError, AssertionError):
            self._stdin_closed = True  # the process is gone; output will say why

    async def close_stdin(self) -> None:
        if not await self._started_quietly() or self._stdin_closed or self._stream is None:
            return
        self._stdin_closed = True
        half_close(self._stream)

    async def read_output(self) -> tuple[OutputStream, bytes] | None:
        await self._started()
        if self._pending:
            return self._pending.pop(0)
        if self._stream is None:
            return None
        with runtime_errors():
            message = await self._stream.read_out()
        if message is None:
            return None
        if self._tty or message.stream == OutputStream.STDOUT.value:
            return OutputStream.STDOUT, message.data
        return OutputStream.STDERR, message.data

    async def wait(self) -> int:
        assert self._control is not None
        return await self._control.wait()

    async def resize(self, size: TerminalSize) -> None:
        await self._started_quietly()
        if self._control is not None:
            await self._control.resize(size)

    async def signal(self, signal_name: str) -> None:
        await self._started_quietly()
        if self._control is not None:
            await self._control.signal(signal_name)

    async def hangup(self) -> None:
        await self._started_quietly()
        if self._control is not None:
            await self._control.hangup()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._login is not None:
            self._login.close()
        if self._stream is not None:
            with contextlib.suppress(Exception):
                await self._stream.close()
