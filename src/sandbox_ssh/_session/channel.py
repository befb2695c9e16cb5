"""One session channel: a shell, a command or a subsystem running in the sandbox.

The SSH side feeds requests in and implements :class:`ChannelOutput`; this
module decides what runs and moves the bytes, and never sees asyncssh.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from .._metrics import Metrics
from ..hooks import (
    DirectStdio,
    ExitSignal,
    ExitSignalReporter,
    OutputStream,
    ProcessSpec,
    SandboxError,
    SandboxProcess,
    SandboxProvider,
    TerminalSize,
)
from . import login
from .agent import AgentForwarding
from .audit import ConnectionAudit, NoAudit
from .environment import Endpoints, EnvironmentPolicy, accepts, build_environment
from .forwarding import Forwarding
from .loop_share import TenantLoopShare
from .quotas import TenantQuota
from .recording import Recorder, RecordingPolicy
from .resolve import ResolvedConnection, one_line
from .starts import StartScheduler

log = logging.getLogger("sandbox_ssh.session")

# Bounds on what env requests may add: beyond them variables are ignored, as unaccepted
# ones are, so a flood of requests cannot grow memory or the exec request without limit.
MAX_CLIENT_ENV_VARIABLES = 1000
MAX_CLIENT_ENV_BYTES = 256 * 1024

# Stop granting the client SSH window while this much stdin waits for the sandbox.
_STDIN_HIGH_WATER = 1 << 20
_STDIN_LOW_WATER = 1 << 18
# Input up to this size (keystrokes, short lines) is written in the callback that
# received it; bulk input goes through the pump, which writes whole chunks. It is
# PIPE_BUF, so a pipe takes such a write whole or not at all.
_DIRECT_STDIN_MAX = 4096

Spawn = Callable[[Coroutine[Any, Any, None]], None]


class ChannelOutput(Protocol):
    """What the session logic needs of an SSH channel."""

    def write(self, data: bytes, stream: OutputStream) -> None: ...

    async def drain(self) -> None:
        """Return once the client's window has room again."""

    def writable(self) -> bool:
        """Whether the client's window has room now."""

    def pause_input(self) -> None: ...

    def resume_input(self) -> None: ...

    def exit(self, status: int) -> None:
        """Send exit-status, EOF and close, after everything written so far."""

    def exit_signal(self, signal: ExitSignal) -> None:
        """Send exit-signal, EOF and close, after everything written so far."""


SFTP_SERVER_PATHS = (
    "/usr/lib/openssh/sftp-server",
    "/usr/libexec/openssh/sftp-server",
    "/usr/lib/ssh/sftp-server",
    "/usr/libexec/sftp-server",
)
_FIND_EXECUTABLE = (
    'for p; do if [ -f "$p" ] && [ -x "$p" ]; then echo "$p"; exit 0; fi; done; exit 1'
)


@dataclass(frozen=True)
class SubsystemConfig:
    """Where the sandbox's own sftp-server may be; the first executable one is run."""

    sftp_server_paths: tuple[str, ...] = SFTP_SERVER_PATHS


@dataclass(frozen=True)
class PtyRequest:
    term: str
    size: TerminalSize
    modes: Mapping[int, int]


class SessionChannel:
    def __init__(
        self,
        provider: SandboxProvider,
        connection: ResolvedConnection,
        endpoints: Endpoints,
        output: ChannelOutput,
        spawn: Spawn,
        *,
        subsystems: SubsystemConfig | None = None,
        subsystem_cache: dict[str, str] | None = None,
        environment: EnvironmentPolicy | None = None,
        audit: ConnectionAudit | None = None,
        starts: StartScheduler | None = None,
        metrics: Metrics | None = None,
        log: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
        agent: AgentForwarding | None = None,
        recording: RecordingPolicy | None = None,
        forwarding: Forwarding | None = None,
        loop_share: TenantLoopShare | None = None,
        quota: TenantQuota | None = None,
    ) -> None:
        self._provider = provider
        self._quota = quota
        self._loop_share = loop_share
        self._forwarding = forwarding
        self._connection = connection
        self._endpoints = endpoints
        self._output = output
        self._spawn = spawn
        self._pty: PtyRequest | None = None
        self._subsystems = subsystems or SubsystemConfig()
        self._subsystem_cache = subsystem_cache if subsystem_cache is not None else {}
        self._subsystem_argv: list[str] = []
        self._environment = environment or EnvironmentPolicy()
        self._audit = audit or ConnectionAudit(NoAudit(), "-")
        self._starts = starts or StartScheduler()
        self._metrics = metrics or Metrics()
        self._log = log if log is not None else logging.getLogger("sandbox_ssh.session")
        self._started_at = 0.0
        self._agent = agent
        self._recording = recording
        self._recorder: Recorder | None = None
        self._counted_process = False
        self._client_env: dict[str, str] = {}
        self._client_env_bytes = 0
        self._mode: login.Mode | None = None
        self._process: SandboxProcess | None = None
        # The process, when its stdio can be reached without a task switch (checked once:
        # isinstance against a Protocol is slow).
        self._direct: DirectStdio | None = None
        self._stdin: collections.deque[bytes | None] = collections.deque()
        self._stdin_bytes = 0
        self._stdin_writing = False
        self._stdin_ready = asyncio.Event()
        self._input_paused = False
        self._pending_size: TerminalSize | None = None
        self._resize_running = False
        # Set while no resize is in flight: stdin waits on it, so a keystroke sent after a
        # window-change reaches a terminal of the new size, as under sshd.
        self._resizes_applied = asyncio.Event()
        self._resizes_applied.set()
        self._task: asyncio.Task[None] | None = None
        self._finished = False
        self._closed = False

    # Requests that arrive before the session starts.

    def request_pty(self, term: str, size: TerminalSize, modes: Mapping[int, int]) -> bool:
        if self._mode is not None:
            return False
        self._pty = PtyRequest(term=term, size=size, modes=modes)
        return True

    def set_env(self, name: str, value: str) -> None:
        # Like sshd, a variable that is not accepted is dropped without a word.
        if not accepts(name, self._environment.accept):
            return
        size = len(name) + len(value)
        if name not in self._client_env and (
            len(self._client_env) >= MAX_CLIENT_ENV_VARIABLES
            or self._client_env_bytes + size > MAX_CLIENT_ENV_BYTES
        ):
            return
        self._client_env[name] = value
        self._client_env_bytes += size

    async def prepare_subsystem(self, name: str) -> bool:
        """Whether the subsystem can run; a refusal's reason goes to the client's stderr."""
        if name != "sftp":
            return False
        path = self._subsystem_cache.get(name)
        if path is None:
            candidates = self._subsystems.sftp_server_paths
            path = await self._find_executable(candidates)
            if path is None:
                looked = ", ".join(candidates)
                reason = f"sandbox-ssh: this sandbox has no sftp-server (looked in {looked})"
                self._output.write(reason.encode() + b"\n", OutputStream.STDERR)
                self._log.info("session %s: %s", self._connection.session_id, reason)
                return False
            self._subsystem_cache[name] = path
        self._subsystem_argv = [path]
        return True

    async def _find_executable(self, candidates: tuple[str, ...]) -> str | None:
        spec = ProcessSpec(
            argv=["/bin/sh", "-c", _FIND_EXECUTABLE, "sandbox-ssh", *candidates],
            user=self._connection.user,
        )
        try:
            process = await self._start_process(spec)
        except Exception as error:
            self._log.warning(
                "session %s: cannot look for a subsystem: %s",
                self._connection.session_id,
                one_line(error),
            )
            return None
        try:
            output = bytearray()
            while (chunk := await process.read_output()) is not None:
                if chunk[0] is OutputStream.STDOUT:
                    output += chunk[1]
            found = output.decode(errors="replace").strip()
            return found if await process.wait() == 0 and found in candidates else None
        finally:
            await process.close()

    def start(self, mode: login.Mode, command: str | None) -> None:
        self._mode = mode
        pty = self._pty is not None
        kind = "sftp" if mode is login.Mode.DIRECT else "pty" if pty else mode.value
        self._metrics.channels.labels(kind).inc()
        term = self._pty.term if self._pty else None
        recording = self._start_recording(mode, command)
        if mode is login.Mode.EXEC:
            self._audit.record("exec", command=command, pty=pty, recording=recording)
        elif mode is login.Mode.SHELL:
            self._audit.record("shell", pty=pty, term=term, recording=recording)
        else:
            self._audit.record("subsystem", argv=self._subsystem_argv)
        self._task = asyncio.ensure_future(self._run(mode, command))

    def _start_recording(self, mode: login.Mode, command: str | None) -> str | None:
        policy = self._recording
        if policy is None or mode is login.Mode.DIRECT:
            return None
        if self._pty is None and not policy.exec_too:
            return None
        size = self._pty.size if self._pty else TerminalSize(cols=80, rows=24)
        facts = {
            "sandbox": self._connection.sandbox.id[:12],
            "user": self._connection.user.username,
            "connection": self._audit.connection_id,
            "term": self._pty.term if self._pty else None,
            "command": command,
        }
        try:
            self._recorder = Recorder(
                policy, self._connection.session_id, size.cols, size.rows, facts
            )
        except OSError as error:
            self._log.warning("cannot record this session: %s", error)
            return None
        return str(self._recorder.path)

    # Traffic and events while it runs.

    def feed_stdin(self, data: bytes) -> None:
        if self._loop_share is not None and len(data) <= _DIRECT_STDIN_MAX:
            self._loop_share.touch()  # a keystroke or a request, not a bulk upload
        if self._recorder is not None:
            self._recorder.input(data)
        process = self._direct
        if (
            process is not None
            and len(data) <= _DIRECT_STDIN_MAX
            and not self._stdin
            and not self._stdin_writing
            and not self._resize_running
        ):
            # Nothing queued or in flight: write now, in this callback (a keystroke's path).
            data = data[process.write_stdin_nowait(data) :]
            if not data:
                return
        self._stdin.append(data)
        self._stdin_bytes += len(data)
        self._stdin_ready.set()
        if self._stdin_bytes > _STDIN_HIGH_WATER and not self._input_paused:
            self._input_paused = True
            self._output.pause_input()

    def stdin_eof(self) -> None:
        # A terminal has no half-close; sshd ignores EOF on a pty session too.
        if self._pty is None:
            self._stdin.append(None)
            self._stdin_ready.set()

    def resize(self, size: TerminalSize) -> None:
        if self._recorder is not None:
            self._recorder.resize(size.cols, size.rows)
        # Coalesce: only the latest size matters, and resizes must not reorder.
        self._pending_size = size
        if not self._resize_running and self._process is not None:
            self._resize_running = True
            self._resizes_applied.clear()
            self._spawn(self._apply_resizes())

    def signal(self, signal_name: str) -> bool:
        if self._process is None or self._mode is login.Mode.DIRECT:
            return False
        self._spawn(self._process.signal(signal_name))
        return True

    def close(self) -> None:
        """The channel or the whole connection closed; hang up whatever still runs."""
        if self._closed:
            return
        self._closed = True
        if self._recorder is not None:
            self._recorder.close()
        process = self._process
        if process is None:
            return  # not started yet: _run hangs it up as soon as it exists
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._spawn(self._hang_up(process, running=not self._finished))

    def _process_ended(self) -> None:
        if self._counted_process:
            self._counted_process = False
            self._metrics.processes.dec()

    async def _hang_up(self, process: SandboxProcess, running: bool) -> None:
        # Release the output stream first: Docker finishes an exec (and every later exec
        # of the container) only once its output has been drained or dropped, so a hangup
        # run while a stalled stream is still held would wait on itself.
        await process.close()
        if running:
            await process.hangup()
        self._process_ended()

    # Internals.

    async def _run(self, mode: login.Mode, command: str | None) -> None:
        agent_socket = await self._agent.socket_path() if self._agent is not None else None
        if mode is login.Mode.SHELL and self._agent is not None and self._agent.refusal:
            notice = f"sandbox-ssh: agent forwarding refused: {self._agent.refusal}\r\n"
            self._output.write(notice.encode(), OutputStream.STDERR)
        spec = self._process_spec(mode, command, agent_socket)
        try:
            if self._quota is not None:
                self._quota.start()
            process = await self._start_process(spec)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            self._log.warning(
                "session %s: cannot start process: %s", self._connection.session_id, one_line(error)
            )
            self._output.write(f"sandbox-ssh: {one_line(error)}\r\n".encode(), OutputStream.STDERR)
            self._finished = True
            self._output.exit(255)
            return
        self._process = process
        self._direct = process if isinstance(process, DirectStdio) else None
        self._metrics.processes.inc()
        self._counted_process = True
        if self._closed:
            self._spawn(self._hang_up(process, running=True))
            return
        if self._pending_size is not None:
            self.resize(self._pending_size)
        stdin_task = asyncio.ensure_future(self._pump_stdin(process))
        try:
            await self._pump_output(process)
            status = await process.wait()
        except SandboxError as error:
            self._output.write(f"sandbox-ssh: {one_line(error)}\r\n".encode(), OutputStream.STDERR)
            status = 255
        finally:
            stdin_task.cancel()
        self._finished = True
        self._process_ended()
        if self._recorder is not None:
            self._recorder.close()
        signal = process.exit_signal() if isinstance(process, ExitSignalReporter) else None
        if signal is not None:
            self._audit.record("exit", signal=signal.name, core_dumped=signal.core_dumped)
            self._output.exit_signal(signal)
        else:
            self._audit.record("exit", status=status)
            self._output.exit(status)
        self._spawn(process.close())

    async def _start_process(self, spec: ProcessSpec) -> SandboxProcess:
        sandbox = self._connection.sandbox
        if self._forwarding is not None:
            await self._forwarding.listeners_settled()
        self._started_at = time.monotonic()

        async def start() -> SandboxProcess:
            return await self._metrics.timed(
                self._metrics.provider_latency,
                "start_process",
                lambda: self._provider.start_process(sandbox, spec),
            )

        return await self._starts.run(sandbox.id, self._audit.connection_id, start)

    def _process_spec(
        self, mode: login.Mode, command: str | None, agent_socket: str | None = None
    ) -> ProcessSpec:
        user = self._connection.user
        terminal = None
        if self._pty is not None:
            # The last size the client sent: a window-change before the process exists is
            # the size it starts with, and none is pending any more.
            terminal, self._pending_size = self._pending_size or self._pty.size, None
        env = build_environment(
            self._connection.env,
            self._client_env,
            self._endpoints,
            term=self._pty.term if self._pty else None,
            agent_socket=agent_socket,
            forced=self._environment.forced,
        )
        argv = login.login_argv(
            mode,
            user,
            self._subsystem_argv if mode is login.Mode.DIRECT else command,
            terminal=terminal,
            terminal_modes=self._pty.modes if self._pty else None,
            session_id=self._connection.session_id,
        )
        return ProcessSpec(argv=argv, env=env, user=user, terminal=terminal)

    async def _pump_output(self, process: SandboxProcess) -> None:
        direct = self._direct
        first = True
        while True:
            if direct is not None:
                direct.deliver_output(self._deliver)
            chunk = await process.read_output()
            if first:
                first = False
                elapsed = time.monotonic() - self._started_at
                self._metrics.provider_latency.labels("first_byte").observe(elapsed)
            if chunk is None:
                return
            stream, data = chunk
            share = self._loop_share
            if share is not None and (delay := share.delay()) > 0:
                await asyncio.sleep(delay)
            self._write(data, stream)
            await self._output.drain()

    def _deliver(self, stream: OutputStream, data: bytes) -> bool:
        """Output straight from the process's descriptor; False once the client's window is
        full, or this tenant has used its share of the loop for now."""
        self._write(data, stream)
        share = self._loop_share
        return self._output.writable() and (share is None or share.delay() == 0)

    def _write(self, data: bytes, stream: OutputStream) -> None:
        if self._recorder is not None:
            self._recorder.output(data)
        share = self._loop_share
        if share is None:
            self._output.write(data, stream)
            return
        started = time.perf_counter()
        self._output.write(data, stream)
        share.charge(time.perf_counter() - started)

    async def _pump_stdin(self, process: SandboxProcess) -> None:
        while True:
            while not self._stdin:
                self._stdin_ready.clear()
                await self._stdin_ready.wait()
            data = self._stdin.popleft()
            if data is None:
                await process.close_stdin()
                return
            self._stdin_bytes -= len(data)
            if self._input_paused and self._stdin_bytes < _STDIN_LOW_WATER:
                self._input_paused = False
                self._output.resume_input()
            self._stdin_writing = True
            try:
                await self._resizes_applied.wait()
                await process.write_stdin(data)
            finally:
                self._stdin_writing = False

    async def _apply_resizes(self) -> None:
        try:
            while self._pending_size is not None and self._process is not None:
                size, self._pending_size = self._pending_size, None
                with contextlib.suppress(Exception):
                    await self._process.resize(size)
        finally:
            self._resize_running = False
            self._resizes_applied.set()
