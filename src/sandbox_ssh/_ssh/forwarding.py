"""asyncssh's forwarding callbacks, served with sockets that live inside the sandbox.

Returning True from these callbacks would make asyncssh dial or listen on the
gateway host itself; every path here takes a socket the session logic got from
the sandbox and relays it to the channel with ``relay.Relay`` (half-close,
flow control and early bytes included), not asyncssh's SSHForwarder, which can
lose the close after a half-close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any, cast

import asyncssh

from .._session.forwarding import Forwarding, ForwardingRefused
from ..hooks import BoundListener
from .relay import Relay

log = logging.getLogger("sandbox_ssh.forwarding")


def _open_error(refusal: ForwardingRefused) -> asyncssh.ChannelOpenError:
    code = (
        asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED
        if refusal.prohibited
        else asyncssh.OPEN_CONNECT_FAILED
    )
    return asyncssh.ChannelOpenError(code, str(refusal))


async def _bridge(sock: socket.socket, release: Callable[[], None], forwarding: Forwarding) -> Any:
    """The channel half of a relay whose socket half is ``sock``."""
    relay = Relay(on_socket_closed=release, loop_share=forwarding.loop_share)
    loop = asyncio.get_running_loop()
    try:
        await loop.create_connection(lambda: relay.socket_side, sock=sock)
    except OSError as error:
        sock.close()
        release()
        raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, str(error)) from None
    return relay.channel_side


async def _open_direct(
    forwarding: Forwarding,
    what: str,
    connect: Callable[[], Awaitable[socket.socket]],
    earlier_requests: Awaitable[None],
) -> Any:
    # As under sshd, a forward requested before this channel is bound before it is dialled:
    # `ssh -f -N -R B:... -L A:localhost:B` then a connection to A finds B listening.
    await earlier_requests
    try:
        release = forwarding.take_share()
    except ForwardingRefused as refusal:
        forwarding.log.warning("%s refused: %s", what, refusal)
        raise _open_error(refusal) from None
    try:
        sock = await connect()
    except ForwardingRefused as refusal:
        release()
        forwarding.log.info("%s refused: %s", what, refusal)
        raise _open_error(refusal) from None
    except BaseException:
        release()
        raise
    return await _bridge(sock, release, forwarding)


async def open_direct_tcp(
    forwarding: Forwarding, host: str, port: int, earlier_requests: Awaitable[None]
) -> asyncssh.SSHTCPSession[bytes]:
    what = f"direct-tcpip to {host}:{port}"
    connect = lambda: forwarding.connect_tcp(host, port)  # noqa: E731
    channel = await _open_direct(forwarding, what, connect, earlier_requests)
    return cast(asyncssh.SSHTCPSession[bytes], channel)


async def open_direct_unix(
    forwarding: Forwarding, path: str, earlier_requests: Awaitable[None]
) -> asyncssh.SSHUNIXSession[bytes]:
    what = f"direct-streamlocal to {path}"
    connect = lambda: forwarding.connect_unix(path)  # noqa: E731
    channel = await _open_direct(forwarding, what, connect, earlier_requests)
    return cast(asyncssh.SSHUNIXSession[bytes], channel)


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


async def serve_relayed(
    bound: BoundListener,
    open_channel: Callable[[Relay, asyncio.Transport], Awaitable[Any]],
    forwarding: Forwarding,
) -> asyncio.AbstractServer:
    """Accept on ``bound``; each connection gets a relay and a channel to the client.

    Connections beyond the session's share are closed as soon as they are accepted: the
    sandbox dials its own listener, so it could otherwise spend the gateway's descriptors.
    """
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    async def connect(relay: Relay, transport: asyncio.Transport) -> None:
        try:
            await open_channel(relay, transport)
        except (OSError, asyncssh.Error) as error:
            log.info("remote forward: the client refused the channel: %s", error)
            relay.close()

    def start_channel(relay: Relay, transport: asyncio.Transport) -> None:
        try:
            relay.on_socket_closed = forwarding.take_share()
        except ForwardingRefused as refusal:
            forwarding.log.warning("remote forward: connection dropped: %s", refusal)
            relay.close()
            return
        task = asyncio.ensure_future(connect(relay, transport))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    return await loop.create_server(
        lambda: Relay(start_channel, loop_share=forwarding.loop_share).socket_side, sock=bound.sock
    )


async def listen_tcp(
    conn: asyncssh.SSHServerConnection, forwarding: Forwarding, host: str, port: int
) -> SandboxListener | bool:
    try:
        bound = await forwarding.listen_tcp(host, port)
    except ForwardingRefused as refusal:
        forwarding.log.info("tcpip-forward on %s:%d refused: %s", host, port, refusal)
        return False
    bound_port = bound.port or int(bound.sock.getsockname()[1])

    async def open_channel(relay: Relay, transport: asyncio.Transport) -> None:
        peer = transport.get_extra_info("peername") or ("", 0)
        # Reported to the client with the host it asked for and the port actually bound.
        await conn.create_connection(
            lambda: relay.channel_side, host, bound_port, str(peer[0]), int(peer[1])
        )

    server = await serve_relayed(bound, open_channel, forwarding)
    return SandboxListener(bound, server, bound_port)


async def listen_unix(
    conn: asyncssh.SSHServerConnection, forwarding: Forwarding, path: str
) -> SandboxListener | bool:
    try:
        bound = await forwarding.listen_unix(path)
    except ForwardingRefused as refusal:
        forwarding.log.info("streamlocal-forward on %s refused: %s", path, refusal)
        return False

    async def open_channel(relay: Relay, transport: asyncio.Transport) -> None:
        await conn.create_unix_connection(lambda: relay.channel_side, path)

    server = await serve_relayed(bound, open_channel, forwarding)
    return SandboxListener(bound, server, 0)
