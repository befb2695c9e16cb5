"""A process started with Docker's exec API, and the traps that come with it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

import aiodocker
from aiodocker.execs import Exec
from aiodocker.stream import Stream

from ...hooks import OutputStream, ProcessSpec, SandboxError, TerminalSize
from .. import _posix
from ._aiodocker_internals import half_close, open_stream
from ._client import UNREACHABLE, engine_error, runtime_errors

log = logging.getLogger("sandbox_ssh.docker")

# Docker's default detach keys (Ctrl-P Ctrl-Q) swallow Ctrl-P and kill TTY
# sessions, and they cannot be switched off; make them unreachable in practice.
DETACH_KEYS = "ctrl-^,ctrl-@,ctrl-^,ctrl-@,ctrl-^,ctrl-@"
_EXIT_POLL_LIMIT = 10.0


async def run_short(
    docker: aiodocker.Docker,
    container_id: str,
    argv: Sequence[str],
    user: str,
    within: float = _posix.SHORT_TIMEOUT,
) -> tuple[int | None, bytes]:
    """Run a short helper in the container to its end: (exit code, stdout).

    Bounded in output and time (SandboxError). Raises aiodocker.DockerError when the
    runtime refuses it.
    """
    helper = await docker.containers.container(container_id).exec(
        list(argv), stdin=False, tty=False, user=user
    )
    async with helper.start(detach=False) as stream:

        async def receive() -> tuple[OutputStream, bytes] | None:
            message = await stream.read_out()
            return None if message is None else (OutputStream(message.stream), message.data)

        output = await _posix.collect_short(receive, within=within)
    exit_code = (await helper.inspect()).get("ExitCode")
    return exit_code, output


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
        self._exec: Exec | None = None
        self._stream: Stream | None = None
        self._pid: int | None = None
        self._login: _posix.Login | None = None
        self._answer_timeout = answer_timeout
        self._before_exec = before_exec
        self._exec_user = "0"
        self._pending: list[tuple[OutputStream, bytes]] = []
        self._stdin_closed = False
        self._closed = False

    @property
    def pid(self) -> int | None:
        """The PID inside the sandbox, or None when the runtime failed to start it."""
        return self._pid

    async def start(self, spec: ProcessSpec, exec_user: str) -> None:
        self._exec_user = exec_user
        container = self._docker.containers.container(self._container_id)
        try:
            self._exec = await container.exec(
                _posix.pid_report_argv(spec.argv, spec.terminal),
                stdin=True,
                tty=self._tty,
                user=exec_user,
                environment=dict(spec.env),
                workdir=spec.workdir,
                detach_keys=DETACH_KEYS,
            )
            self._stream = self._exec.start(detach=False)
            await open_stream(self._stream)
        except aiodocker.DockerError as error:
            raise engine_error(error, "the sandbox refused the process") from error
        # The PID line is the sandbox's to send: waited for after the start's slot is free.
        self._login = _posix.Login(self._read_pid())

    async def _read_pid(self) -> None:
        assert self._stream is not None
        stream = self._stream

        async def receive() -> tuple[OutputStream, bytes] | None:
            message = await stream.read_out()
            return None if message is None else (OutputStream(message.stream), message.data)

        self._pid, self._pending = await _posix.read_pid_line(receive, self._answer_timeout)

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
        """Exit code from exec inspect; it is final only once Running is false."""
        assert self._exec is not None
        delay = 0.002
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _EXIT_POLL_LIMIT
        while True:
            with runtime_errors():
                info = await self._exec.inspect()
            if not info.get("Running") and info.get("ExitCode") is not None:
                return int(info["ExitCode"])
            if loop.time() > deadline:
                raise SandboxError("the runtime did not report an exit status")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)

    async def resize(self, size: TerminalSize) -> None:
        await self._started_quietly()
        if not self._tty or self._exec is None or self._pid is None:
            return
        with contextlib.suppress(aiodocker.DockerError, *UNREACHABLE):
            await self._exec.resize(h=size.rows, w=size.cols)

    async def signal(self, signal_name: str) -> None:
        await self._started_quietly()
        if self._pid is None:
            return
        await self._run_control(_posix.signal_argv(self._pid, signal_name))

    async def hangup(self) -> None:
        await self._started_quietly()
        if self._pid is None:
            return
        # As the session's user: without CAP_SYS_PTRACE (not in Docker's defaults), even
        # root in the sandbox cannot read another user's /proc/PID/fd, and the hang-up
        # finds the session's processes by what they hold.
        argv = _posix.hangup_argv(self._pid, self._hangup_grace)
        await self._run_control(argv, self._exec_user, self._hangup_grace)

    async def _run_control(self, argv: Sequence[str], user: str = "0:0", grace: float = 0) -> None:
        """Run a short helper in the sandbox and wait for it to finish (bounded)."""
        try:
            if self._before_exec is not None:
                await self._before_exec()
            await run_short(
                self._docker, self._container_id, argv, user, _posix.SHORT_TIMEOUT + grace
            )
        except aiodocker.DockerError as error:
            log.warning("control exec in %s failed: %s", self._container_id[:12], error.message)
        except (*UNREACHABLE, SandboxError) as error:
            log.warning("control exec in %s failed: %s", self._container_id[:12], error)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._login is not None:
            self._login.close()
        if self._stream is not None:
            with contextlib.suppress(Exception):
                await self._stream.close()
