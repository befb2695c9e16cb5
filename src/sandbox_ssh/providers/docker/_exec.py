"""An exec of Docker's API as two halves: its control, and its stream on a plain socket.

The control (exit status from exec inspect, resize, signals and the hang-up through
short helper execs) needs the engine's API, and so the Docker socket. The stream
needs nothing once it is open: after the HTTP upgrade, the connection carries that
exec's stdio and nothing else. ``hijack`` opens it on a socket of its own, so that it
can be handed to a process without the Docker socket (the unprivileged front, through
the broker), with the PID line the sandbox writes first already read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import struct
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiodocker
from aiodocker.execs import Exec

from ...hooks import OutputStream, SandboxError, TerminalSize
from .. import _posix
from ._client import UNREACHABLE, runtime_errors

log = logging.getLogger("sandbox_ssh.docker")

_EXIT_POLL_LIMIT = 10.0
# The engine's answer to the upgrade: headers only, then the stream.
_MAX_RESPONSE_HEAD = 16 * 1024
_HEADER = struct.Struct(">BxxxL")  # stream (0 stdin, 1 stdout, 2 stderr), then the length
_READ_SIZE = 1 << 18


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


class ExecControl:
    """What only the engine's API can do for one started exec."""

    def __init__(
        self,
        docker: aiodocker.Docker,
        container_id: str,
        execution: Exec,
        *,
        tty: bool,
        exec_user: str,
        hangup_grace: float,
        before_exec: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._docker = docker
        self._container_id = container_id
        self._exec = execution
        self._tty = tty
        self._exec_user = exec_user
        self._hangup_grace = hangup_grace
        self._before_exec = before_exec
        # The process's PID inside the sandbox, from its PID line; None until then (or
        # when it never came): signals and the hang-up need it.
        self.pid: int | None = None

    async def wait(self) -> int:
        """Exit code from exec inspect; it is final only once Running is false."""
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
        if not self._tty or self.pid is None:
            return
        with contextlib.suppress(aiodocker.DockerError, *UNREACHABLE):
            await self._exec.resize(h=size.rows, w=size.cols)

    async def signal(self, signal_name: str) -> None:
        if self.pid is not None:
            await self._run_control(_posix.signal_argv(self.pid, signal_name))

    async def hangup(self) -> None:
        if self.pid is None:
            return
        # As the session's user: without CAP_SYS_PTRACE (not in Docker's defaults), even
        # root in the sandbox cannot read another user's /proc/PID/fd, and the hang-up
        # finds the session's processes by what they hold.
        argv = _posix.hangup_argv(self.pid, self._hangup_grace)
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


class StreamFrames:
    """Docker's stream: without a terminal, frames of an 8-byte header and a payload;
    with one, the terminal's bytes as they come."""

    def __init__(self, tty: bool, remainder: bytes = b"") -> None:
        self.tty = tty
        self._buffer = bytearray(remainder)

    def feed(self, data: bytes) -> list[tuple[OutputStream, bytes]]:
        if self.tty:
            return [(OutputStream.STDOUT, data)] if data else []
        self._buffer += data
        chunks: list[tuple[OutputStream, bytes]] = []
        while len(self._buffer) >= _HEADER.size:
            kind, length = _HEADER.unpack_from(self._buffer)
            if len(self._buffer) < _HEADER.size + length:
                break
            payload = bytes(self._buffer[_HEADER.size : _HEADER.size + length])
            del self._buffer[: _HEADER.size + length]
            if payload:
                stream = OutputStream.STDERR if kind == 2 else OutputStream.STDOUT
                chunks.append((stream, payload))
        return chunks

    @property
    def remainder(self) -> bytes:
        """Bytes of a frame not complete yet."""
        return bytes(self._buffer)


@dataclass
class Attached:
    """A started exec's stream, its PID line read: what the byte path needs."""

    sock: socket.socket
    pid: int | None
    # Output that came before the PID line or with it, in order, then the start of a
    # frame not complete yet (to prepend to what the socket gives next).
    early: list[tuple[OutputStream, bytes]] = field(default_factory=list)
    remainder: bytes = b""


def _endpoint(docker_host: str) -> tuple[int, str | tuple[str, int]]:
    parts = urlsplit(docker_host)
    if parts.scheme == "unix":
        return socket.AF_UNIX, parts.path
    if parts.scheme in ("tcp", "http"):
        return socket.AF_INET6 if ":" in (parts.hostname or "") else socket.AF_INET, (
            parts.hostname or "127.0.0.1",
            parts.port or 2375,
        )
    raise SandboxError(f"cannot open an exec stream on {docker_host}")


@dataclass
class Hijacked:
    """An exec started with its stream on a connection of its own."""

    sock: socket.socket
    # Bytes of the stream that came with the engine's answer.
    leftover: bytes = b""


async def hijack(
    docker_host: str, api_version: str, exec_id: str, tty: bool, within: float
) -> Hijacked:
    """Start the exec with its stream on a new connection of its own (HTTP upgrade)."""
    family, address = _endpoint(docker_host)
    loop = asyncio.get_running_loop()
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        async with asyncio.timeout(within):
            await loop.sock_connect(sock, address)
            body = json.dumps({"Detach": False, "Tty": tty}).encode()
            request = (
                f"POST /{api_version}/exec/{exec_id}/start HTTP/1.1\r\n"
                "Host: docker\r\nContent-Type: application/json\r\n"
                "Connection: Upgrade\r\nUpgrade: tcp\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode() + body
            await loop.sock_sendall(sock, request)
            status, rest = await _response_head(loop, sock)
    except TimeoutError:
        sock.close()
        raise SandboxError("the container runtime did not start the process in time") from None
    except OSError as error:
        sock.close()
        raise SandboxError(f"the container runtime is unavailable: {error}") from None
    except BaseException:
        sock.close()
        raise
    if status not in (101, 200):
        sock.close()
        text = rest.decode(errors="replace").strip()
        with contextlib.suppress(ValueError, AttributeError):
            text = str(json.loads(text).get("message") or text)
        raise SandboxError(f"the sandbox refused the process: {text or f'HTTP {status}'}")
    return Hijacked(sock, rest)


async def _response_head(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> tuple[int, bytes]:
    """The status of the engine's answer, and the bytes after its headers."""
    data = bytearray()
    while b"\r\n\r\n" not in data:
        if len(data) > _MAX_RESPONSE_HEAD:
            raise SandboxError("the container runtime's answer was too long")
        chunk = await loop.sock_recv(sock, 4096)
        if not chunk:
            raise SandboxError("the container runtime closed the exec stream")
        data += chunk
    head, _, rest = bytes(data).partition(b"\r\n\r\n")
    try:
        status = int(head.split(b"\r\n", 1)[0].split()[1])
    except (IndexError, ValueError):
        raise SandboxError("the container runtime's answer was not HTTP") from None
    return status, rest


async def attach(hijacked: Hijacked, tty: bool, within: float) -> Attached:
    """Read the PID line (bounded in bytes and time) from a hijacked stream."""
    loop = asyncio.get_running_loop()
    sock = hijacked.sock
    frames = StreamFrames(tty)
    queued = frames.feed(hijacked.leftover)
    ended = False

    async def receive() -> tuple[OutputStream, bytes] | None:
        nonlocal ended
        while not queued:
            if ended:
                return None
            try:
                data = await loop.sock_recv(sock, _READ_SIZE)
            except OSError:
                data = b""
            if not data:
                ended = True
                continue
            queued.extend(frames.feed(data))
        return queued.pop(0)

    pid, pending = await _posix.read_pid_line(receive, within)
    # What the line's reader kept back, then what it never asked for.
    return Attached(sock, pid, [*pending, *queued], frames.remainder)
