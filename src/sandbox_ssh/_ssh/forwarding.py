"""asyncssh's forwarding callbacks, served with sockets that live inside the sandbox.

Returning True from these callbacks would make asyncssh dial or listen on the
gateway host itself; every path here hands asyncssh a socket the session logic
got from the sandbox, and bridges it with asyncssh's own flow-controlled
forwarders (half-close and early bytes included).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any, cast

import asyncssh
from asyncssh.forward import SSHForwarder, SSHLocalPathForwarder, SSHLocalPortForwarder

from .._session.forwarding import Forwarding, ForwardingRefused
from ..hooks import BoundListener

log = logging.getLogger("sandbox_ssh.forwarding")


def _open_error(refusal: ForwardingRefused) -> asyncssh.ChannelOpenError:
    code = (
        asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED
        if refusal.prohibited
        else asyncssh.OPEN_CONNECT_FAILED
    )
    return asyncssh.ChannelOpenError(code, str(refusal))


async def _bridge(sock: socket.socket) -> Any:
    """SSHForwarder plays both asyncssh's session and asyncio's protocol."""
    loop = asyncio.get_running_loop()
    try:
        _, peer = await loop.create_connection(SSHForwarder, sock=sock)
    except OSError as error:
        sock.close()
        raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, str(error)) from None
    return SSHForwarder(peer)


async def open_direct_tcp(
    forwarding: Forwarding, host: str, port: int
) -> asyncssh.SSHTCPSession[bytes]:
    try:
        sock = await forwarding.connect_tcp(host, port)
    except ForwardingRefused as refusal:
        log.info("direct-tcpip to %s:%d refused: %s", host, port, refusal)
        raise _open_error(refusal) from None
    return cast(asyncssh.SSHTCPSession[bytes], await _bridge(sock))


async def open_direct_unix(forwarding: Forwarding, path: str) -> asyncssh.SSHUNIXSession[bytes]:
    try:
        sock = await forwarding.connect_unix(path)
    except ForwardingRefused as refusal:
        log.info("direct-streamlocal to %s refused: %s", path, refusal)
        raise _open_error(refusal) from None
    return cast(asyncssh.SSHUNIXSession[bytes], await _bridge(sock))


class SandboxListener(asyncssh.SSHListener):
    """A listener bound inside the sandbox; each accepted connection becomes a channel."""

    def __init__(self, bound: BoundListener, server: asyncio.AbstractServer, port: int) -> None:
        super().__init__()
        self._bound = bound
        self._server = server
        self._port = port

    def get_port(self) -> int:
        return self._port

    def close(self) -> None:
        self._server.close()
        self._bound.cleanup()

    async def wait_closed(self) -> None:
        with contextlib.suppress(Exception):
            await self._server.wait_closed()


Tunnel = Callable[..., Awaitable[Any]]


async def _serve(
    bound: BoundListener, make_protocol: Callable[[], asyncio.BaseProtocol]
) -> asyncio.AbstractServer:
    loop = asyncio.get_running_loop()
    return await loop.create_server(make_protocol, sock=bound.sock)


async def listen_tcp(
    conn: asyncssh.SSHServerConnection, forwarding: Forwarding, host: str, port: int
) -> SandboxListener | bool:
    try:
        bound = await forwarding.listen_tcp(host, port)
    except ForwardingRefused as refusal:
        log.info("tcpip-forward on %s:%d refused: %s", host, port, refusal)
        return False
    bound_port = int(bound.sock.getsockname()[1])

    async def tunnel(
        session_factory: Callable[[], SSHForwarder], orig_host: str, orig_port: int
    ) -> Any:
        # Reported to the client with the host it asked for and the port actually bound.
        factory = cast(Callable[[], asyncssh.SSHTCPSession[bytes]], session_factory)
        return await conn.create_connection(factory, host, bound_port, orig_host, orig_port)

    server = await _serve(bound, lambda: SSHLocalPortForwarder(conn, tunnel))
    return SandboxListener(bound, server, bound_port)


async def listen_unix(
    conn: asyncssh.SSHServerConnection, forwarding: Forwarding, path: str
) -> SandboxListener | bool:
    try:
        bound = await forwarding.listen_unix(path)
    except ForwardingRefused as refusal:
        log.info("streamlocal-forward on %s refused: %s", path, refusal)
        return False

    async def tunnel(session_factory: Callable[[], SSHForwarder]) -> Any:
        factory = cast(Callable[[], asyncssh.SSHUNIXSession[bytes]], session_factory)
        return await conn.create_unix_connection(factory, path)

    server = await _serve(bound, lambda: SSHLocalPathForwarder(conn, tunnel))
    return SandboxListener(bound, server, 0)
