"""One forwarded connection: an SSH channel and a socket inside the sandbox, relayed both ways.

asyncssh's own SSHForwarder loses the close in one order of half-closes: with
``ssh -W host:port </dev/null`` against a service that writes a line and
closes, the client prints the line and then waits forever (see
docs/upstream/asyncssh-forwarder-half-close.md). This relay keeps an explicit
state per direction instead:

* each side's EOF is passed on to the other side once everything before it
  has been written (``write_eof`` on the socket, EOF on the channel);
* when both directions are done, both sides are closed; closing flushes what
  is still buffered, so every byte is delivered first;
* an error or an abrupt close on either side closes the other at once.

Flow control holds in both directions (a full socket pauses the channel, a
full channel window pauses the socket), and bytes the socket sends before the
channel is open are kept and sent first.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from typing import Any, cast

import asyncssh
from asyncssh.channel import SSHChannel

from .._session.loop_share import TenantLoopShare

log = logging.getLogger("sandbox_ssh.forwarding")

# Bytes the socket may send before the channel is open; reading pauses beyond it.
_EARLY_LIMIT = 1 << 18


class Relay:
    """Both halves of one forwarded connection and the state they share."""

    def __init__(
        self,
        on_socket: Callable[[Relay, asyncio.Transport], None] | None = None,
        on_socket_closed: Callable[[], None] | None = None,
        loop_share: TenantLoopShare | None = None,
    ) -> None:
        """``on_socket`` is called once the socket half is connected (to open the channel),
        ``on_socket_closed`` once its socket is gone (to give back its share); bytes from the
        socket are relayed within the tenant's ``loop_share``."""
        self._on_socket = on_socket
        self._loop_share = loop_share
        self._window_full = False  # the channel's window is full: the socket is paused
        self._share_wait: asyncio.TimerHandle | None = None  # paused for the loop share
        self.on_socket_closed = on_socket_closed
        self.socket_side = _SocketSide(self)
        self.channel_side = _ChannelSide(self)
        self._transport: asyncio.Transport | None = None
        self._channel: SSHChannel[bytes] | None = None
        self._channel_open = False
        self._early: list[bytes] = []
        self._early_size = 0
        self._early_eof = False
        self._socket_done = False  # the socket sent EOF: socket -> channel is finished
        self._channel_done = False  # the channel sent EOF: channel -> socket is finished
        self._closed = False

    # Socket -> channel.

    def socket_made(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._on_socket is not None:
            self._on_socket(self, transport)

    def socket_data(self, data: bytes) -> None:
        if self._channel_open and self._channel is not None:
            share = self._loop_share
            if share is None:
                self._channel.write(data)
                return
            started = time.perf_counter()
            self._channel.write(data)
            share.charge(time.perf_counter() - started)
            delay = share.delay()
            if delay > 0 and self._transport is not None and self._share_wait is None:
                self._transport.pause_reading()
                self._share_wait = asyncio.get_running_loop().call_later(delay, self._share_given)
            return
        self._early.append(data)
        self._early_size += len(data)
        if self._early_size > _EARLY_LIMIT and self._transport is not None:
            self._transport.pause_reading()

    def socket_eof(self) -> None:
        self._socket_done = True
        if self._channel_open and self._channel is not None:
            self._channel.write_eof()
        else:
            self._early_eof = True
        self._finish_if_done()

    def socket_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self.on_socket_closed is not None:
            self.on_socket_closed()
        if exc is not None or not self._socket_done:
            self.close()  # reset, or closed without EOF: nothing more will come either way
        else:
            self._finish_if_done()

    # Channel -> socket.

    def channel_made(self, channel: SSHChannel[bytes]) -> None:
        self._channel = channel

    def channel_started(self) -> None:
        channel = self._channel
        if channel is None:
            return
        self._channel_open = True
        for data in self._early:
            channel.write(data)
        self._early.clear()
        if self._early_size > _EARLY_LIMIT and self._transport is not None:
            self._transport.resume_reading()
        self._early_size = 0
        if self._early_eof:
            channel.write_eof()
        if self._closed:
            channel.close()
        else:
            self._finish_if_done()

    def channel_data(self, data: bytes) -> None:
        if self._transport is not None:
            self._transport.write(data)

    def channel_eof(self) -> None:
        self._channel_done = True
        if self._transport is not None and self._transport.can_write_eof():
            self._transport.write_eof()  # after what is still buffered
        self._finish_if_done()

    def channel_lost(self) -> None:
        self._channel = None
        self._channel_open = False
        self.close()

    # Flow control.

    def _share_given(self) -> None:
        self._share_wait = None
        if not self._window_full and self._transport is not None:
            self._transport.resume_reading()

    def pause_socket(self) -> None:
        self._window_full = True
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_socket(self) -> None:
        self._window_full = False
        if self._transport is not None and self._share_wait is None:
            self._transport.resume_reading()

    def pause_channel(self) -> None:
        if self._channel is not None:
            self._channel.pause_reading()

    def resume_channel(self) -> None:
        if self._channel is not None:
            self._channel.resume_reading()

    # Ending.

    def _finish_if_done(self) -> None:
        if self._socket_done and self._channel_done and self._channel_open:
            self.close()

    def close(self) -> None:
        """Close both sides; each flushes what it still holds before closing."""
        if self._closed and self._transport is None and self._channel is None:
            return
        self._closed = True
        if self._share_wait is not None:
            self._share_wait.cancel()
            self._share_wait = None
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()
        channel = self._channel
        if channel is not None and self._channel_open:
            self._channel = None
            channel.close()


class _SocketSide(asyncio.Protocol):
    def __init__(self, relay: Relay) -> None:
        self._relay = relay

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but are transports.
        self._relay.socket_made(cast(asyncio.Transport, transport))

    def data_received(self, data: bytes) -> None:
        self._relay.socket_data(data)

    def eof_received(self) -> bool:
        self._relay.socket_eof()
        return True  # keep the socket open: the other direction may still be flowing

    def pause_writing(self) -> None:
        self._relay.pause_channel()

    def resume_writing(self) -> None:
        self._relay.resume_channel()

    def connection_lost(self, exc: Exception | None) -> None:
        self._relay.socket_lost(exc)


class _ChannelSide(asyncssh.SSHTCPSession[bytes], asyncssh.SSHUNIXSession[bytes]):
    def __init__(self, relay: Relay) -> None:
        self._relay = relay

    def connection_made(self, chan: Any) -> None:
        self._relay.channel_made(chan)

    def session_started(self) -> None:
        self._relay.channel_started()

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self._relay.channel_data(data)

    def eof_received(self) -> bool:
        self._relay.channel_eof()
        return True  # keep the channel open: the other direction may still be flowing

    def pause_writing(self) -> None:
        self._relay.pause_socket()

    def resume_writing(self) -> None:
        self._relay.resume_socket()

    def connection_lost(self, exc: Exception | None) -> None:
        self._relay.channel_lost()
