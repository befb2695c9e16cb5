"""The aiodocker internals the Docker provider uses, pinned against a few lines of HTTP.

An engine stand-in on a unix socket answers aiodocker as dockerd does: the
version probe, an exec start upgraded to a raw stream, and a JSON endpoint.
"""

from __future__ import annotations

import asyncio
import json
import struct
from pathlib import Path

import aiodocker
import aiohttp

from sandbox_ssh.providers.docker._aiodocker_internals import get_json, half_close, open_stream


class EngineStandIn:
    def __init__(self) -> None:
        self.paths: list[str] = []
        self.stdin = bytearray()
        self.stdin_closed = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *header_lines = head.decode().split("\r\n")
            path = request_line.split()[1]
            self.paths.append(path)
            headers = dict(line.split(": ", 1) for line in header_lines if ": " in line)
            length = int(headers.get("Content-Length") or headers.get("content-length") or 0)
            if length:
                await reader.readexactly(length)
            if path.endswith("/start"):
                writer.write(
                    b"HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream"
                    b"\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
                )
                writer.write(struct.pack(">BxxxL", 1, 6) + b"hello\n")
                await writer.drain()
                while chunk := await reader.read(65536):
                    self.stdin += chunk
                self.stdin_closed.set()
                writer.close()
                return
            if path == "/version":
                body = json.dumps({"ApiVersion": "1.41"}).encode()
            elif path.endswith("/exec"):
                body = json.dumps({"Id": "e1"}).encode()
            elif path.endswith("/exec/e1/json"):
                body = json.dumps({"ProcessConfig": {"tty": False}, "OpenStdin": True}).encode()
            else:
                body = json.dumps({"OCIRuntime": "runc", "path": path}).encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()


def test_open_stream_half_close_and_get_json(tmp_path: Path) -> None:
    async def main() -> None:
        engine = EngineStandIn()
        socket_path = str(tmp_path / "engine.sock")
        server = await asyncio.start_unix_server(engine.handle, socket_path)
        connector = aiohttp.UnixConnector(socket_path)
        docker = aiodocker.Docker(url="unix://localhost", connector=connector)
        try:
            execution = await docker.containers.container("c1").exec(["true"], stdin=True)
            stream = execution.start(detach=False)
            await open_stream(stream)
            assert any(p.endswith("/exec/e1/start") for p in engine.paths)
            message = await stream.read_out()
            assert message is not None and message.data == b"hello\n"
            await stream.write_in(b"typed")
            assert half_close(stream)
            await asyncio.wait_for(engine.stdin_closed.wait(), 10)
            assert bytes(engine.stdin) == b"typed"
            await stream.close()

            answer = await get_json(docker, "libpod/containers/c1/json")
            assert answer["OCIRuntime"] == "runc"
            assert answer["path"] == "/v1.41/libpod/containers/c1/json"
        finally:
            await docker.close()
            await connector.close()
            server.close()

    asyncio.run(main())
