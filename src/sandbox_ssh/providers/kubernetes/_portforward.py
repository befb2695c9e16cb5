"""A TCP connection to a pod's loopback through the portforward subresource.

The port-forward WebSocket carries two channels per port, data (0) and error
(1); the first message on each starts with the port, two bytes little-endian.
The protocol has no half-close: a client's EOF cannot be passed on, so the
connection lasts until the pod's side closes or the client closes both ways.
"""

from __future__ import annotations

import asyncio
import logging
import socket

import aiohttp

from ._channels import data_message, split_message
from ._client import KubeClients, open_port_forward

log = logging.getLogger("sandbox_ssh.kubernetes")

DATA, ERROR = 0, 1
_PORT_PREFIX = 2


async def connect_pod_port(
    clients: KubeClients, namespace: str, pod: str, port: int, keep: set[asyncio.Task[None]]
) -> socket.socket:
    """A socket whose bytes reach ``port`` on the pod's loopback."""
    ws = await open_port_forward(clients, namespace, pod, port)
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    task = asyncio.ensure_future(_relay(ws, ours, f"{namespace}/{pod}:{port}"))
    keep.add(task)
    task.add_done_callback(keep.discard)
    return theirs


async def _relay(ws: aiohttp.ClientWebSocketResponse, sock: socket.socket, where: str) -> None:
    loop = asyncio.get_running_loop()

    async def up() -> None:
        while data := await loop.sock_recv(sock, 65536):
            await ws.send_bytes(data_message(DATA, data))

    async def down() -> None:
        prefixed = {DATA, ERROR}
        async for message in ws:
            if message.type is not aiohttp.WSMsgType.BINARY:
                continue
            channel, data = split_message(message.data)
            if channel in prefixed:
                prefixed.discard(channel)
                data = data[_PORT_PREFIX:]
            if not data:
                continue
            if channel == DATA:
                await loop.sock_sendall(sock, data)
            elif channel == ERROR:
                log.info(
                    "port forward to %s: %s", where, " ".join(data.decode(errors="replace").split())
                )
                return

    sender = asyncio.ensure_future(up())
    try:
        await down()
    except (OSError, aiohttp.ClientError, ValueError) as error:
        log.debug("port forward to %s ended: %s", where, error)
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        sock.close()
        await ws.close()
