"""The forwarding helper and its multiplexing, with the helper run as a local process.

A local subprocess stands in for the sandbox's process (the provider's exec), so the
helper's program, its frames and the gateway side are exercised together; the
Kubernetes suites run the same helper inside real sandboxes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from pathlib import Path

import pytest

from sandbox_ssh import (
    OutputStream,
    ProcessSpec,
    Sandbox,
    SandboxError,
    SandboxStatus,
    TerminalSize,
)
from sandbox_ssh.hooks import ROOT_USER
from sandbox_ssh.providers._stdio import StdioNetwork

SANDBOX = Sandbox(session_id="s", id="local", status=SandboxStatus.RUNNING)


class LocalProcess:
    """Just enough of SandboxProcess over a local subprocess's pipes."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self._queue: asyncio.Queue[tuple[OutputStream, bytes] | None] = asyncio.Queue()
        self._readers = [
            asyncio.ensure_future(self._pump(process.stdout, OutputStream.STDOUT)),
            asyncio.ensure_future(self._pump(process.stderr, OutputStream.STDERR)),
        ]
        self._open = 2

    async def _pump(self, stream: asyncio.StreamReader | None, kind: OutputStream) -> None:
        assert stream is not None
        while data := await stream.read(65536):
            await self._queue.put((kind, data))
        self._open -= 1
        if not self._open:
            await self._queue.put(None)

    async def write_stdin(self, data: bytes) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write(data)
        with contextlib.suppress(ConnectionError):
            await self._process.stdin.drain()

    async def close_stdin(self) -> None:
        assert self._process.stdin is not None
        self._process.stdin.close()

    async def read_output(self) -> tuple[OutputStream, bytes] | None:
        return await self._queue.get()

    async def wait(self) -> int:
        return await self._process.wait()

    async def resize(self, size: TerminalSize) -> None:
        pass

    async def signal(self, signal_name: str) -> None:
        pass

    async def hangup(self) -> None:
        pass

    async def close(self) -> None:
        if self._process.returncode is None:
            assert self._process.stdin is not None
            self._process.stdin.close()
            await self._process.wait()


async def start_locally(sandbox: Sandbox, spec: ProcessSpec) -> LocalProcess:
    process = await asyncio.create_subprocess_exec(
        *spec.argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **spec.env, "PATH": os.path.dirname(sys.executable) + ":/usr/bin:/bin"},
    )
    return LocalProcess(process)


async def echo_server() -> tuple[asyncio.Server, int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.write_eof()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def exchange(sock: socket.socket, payload: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    await loop.sock_sendall(sock, payload)
    sock.shutdown(socket.SHUT_WR)
    received = bytearray()
    while data := await loop.sock_recv(sock, 65536):
        received += data
    sock.close()
    return bytes(received)


def test_connect_relays_both_ways_with_half_close() -> None:
    async def main() -> None:
        server, port = await echo_server()
        network = StdioNetwork(start_locally)
        payload = os.urandom(3 << 20)
        sock = await network.connect(SANDBOX, ROOT_USER, "tcp", "127.0.0.1", str(port))
        assert await exchange(sock, payload) == payload
        await network.close()
        server.close()

    asyncio.run(main())


def test_connect_failure_is_a_one_line_error(tmp_path: Path) -> None:
    async def main() -> None:
        network = StdioNetwork(start_locally)
        with pytest.raises(SandboxError, match="No such file or directory"):
            await network.connect(SANDBOX, ROOT_USER, "unix", str(tmp_path / "missing.sock"))
        await network.close()

    asyncio.run(main())


def test_listen_multiplexes_connections_and_cleans_up(tmp_path: Path) -> None:
    async def main() -> None:
        network = StdioNetwork(start_locally)
        path = str(tmp_path / "remote.sock")
        bound = await network.listen(SANDBOX, ROOT_USER, "unix", path)
        assert bound.path == path and await asyncio.to_thread(os.path.exists, path)
        loop = asyncio.get_running_loop()
        accepted: list[socket.socket] = []

        async def echo(conn: socket.socket) -> None:
            conn.setblocking(False)
            while data := await loop.sock_recv(conn, 65536):
                await loop.sock_sendall(conn, data)
            conn.shutdown(socket.SHUT_WR)

        async def serve(count: int) -> None:
            # What the forwarding layer does with accepted connections: here, echo them.
            echoes = []
            for _ in range(count):
                conn, _ = await loop.sock_accept(bound.sock)
                accepted.append(conn)
                echoes.append(asyncio.ensure_future(echo(conn)))
            await asyncio.gather(*echoes)

        async def client(payload: bytes) -> bytes:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setblocking(False)
            await loop.sock_connect(sock, path)  # a process in the "sandbox"
            return await exchange(sock, payload)

        payloads = [os.urandom(n) for n in (10, 200_000, 1 << 20)]
        server = asyncio.ensure_future(serve(len(payloads)))
        answers = await asyncio.gather(*(client(p) for p in payloads))
        await server
        assert answers == payloads
        bound.cleanup()
        # The helper removes its socket once its stdin ends (the gateway let go).
        await asyncio.wait_for(network.close(), 10)
        assert not await asyncio.to_thread(os.path.exists, path)
        for conn in accepted:
            conn.close()
        bound.sock.close()
        await network.close()

    asyncio.run(main())


def test_listen_tcp_reports_the_port_it_bound() -> None:
    async def main() -> None:
        network = StdioNetwork(start_locally)
        bound = await network.listen(SANDBOX, ROOT_USER, "tcp", "127.0.0.1", "0")
        assert bound.port > 0 and bound.path == ""
        with socket.create_connection(("127.0.0.1", bound.port), timeout=10):
            pass
        bound.cleanup()
        bound.sock.close()
        await network.close()

    asyncio.run(main())


def test_regression_a_sandbox_flooding_a_stalled_forward_grew_gateway_memory(
    tmp_path: Path,
) -> None:
    """The helper's frames for a connection nobody reads stop being pulled at the bound."""
    from sandbox_ssh.providers._stdio._frames import Kind, encode
    from sandbox_ssh.providers._stdio._network import _QUEUE_HIGH, _Multiplexer

    chunk = b"x" * 65536
    limit_frames = 400  # 25 MiB: far beyond the bound and any socket buffer

    class Flood(LocalProcess):
        def __init__(self) -> None:
            self.frames = 0
            self.flooded = asyncio.Event()

        async def read_output(self) -> tuple[OutputStream, bytes] | None:
            if self.frames == 0:
                self.frames += 1
                return OutputStream.STDOUT, encode(Kind.OPEN, 1)
            if self.frames >= limit_frames:
                self.flooded.set()
                await asyncio.Event().wait()
            self.frames += 1
            return OutputStream.STDOUT, encode(Kind.DATA, 1, chunk)

        async def write_stdin(self, data: bytes) -> None:
            pass

        async def close(self) -> None:
            pass

    async def main() -> None:
        path = str(tmp_path / "local.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(1)
        flood = Flood()
        mux = _Multiplexer(flood, path)
        running = asyncio.ensure_future(mux.run(b""))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(flood.flooded.wait(), 2)  # it stopped pulling
        pulled = flood.frames * len(chunk)
        assert pulled < _QUEUE_HIGH + (8 << 20), pulled
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        listener.close()

    asyncio.run(main())
