"""Messages between the gateway and its runtime shim: one JSON object per datagram.

The socket is an AF_UNIX SOCK_SEQPACKET pair, so messages keep their
boundaries, and descriptors (stdio for the runtime, a PTY master back)
travel with the message they belong to.
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import socket
from collections.abc import Sequence
from typing import Any

MAX_MESSAGE = 1 << 16
MAX_FDS = 4
_ANCILLARY_SPACE = socket.CMSG_SPACE(MAX_FDS * array.array("i").itemsize)

Message = dict[str, Any]


def send(sock: socket.socket, message: Message, fds: Sequence[int] = ()) -> None:
    """Send one message; raises BlockingIOError when the socket is full."""
    data = json.dumps(message, separators=(",", ":")).encode()
    if len(data) > MAX_MESSAGE:
        raise ValueError("shim message too long")
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    sock.sendmsg([data], ancillary)


def receive_raw(sock: socket.socket) -> tuple[bytes, list[int]]:
    """One datagram's bytes and the descriptors that came with it (close-on-exec)."""
    data, ancillary, _, _ = sock.recvmsg(MAX_MESSAGE, _ANCILLARY_SPACE, socket.MSG_CMSG_CLOEXEC)
    fds = array.array("i")
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    return data, list(fds)


def receive(sock: socket.socket) -> tuple[Message, list[int]] | None:
    """One message and the descriptors that came with it, None at EOF.

    Raises BlockingIOError when nothing is waiting.
    """
    data, fds = receive_raw(sock)
    if not data:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        return None
    message: Message = json.loads(data)
    return message, fds
