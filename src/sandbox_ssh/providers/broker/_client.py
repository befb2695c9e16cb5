"""The front's end of its connection to the broker: requests out, replies and descriptors in."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

from ..._broker import protocol
from ...hooks import SandboxError

log = logging.getLogger("sandbox_ssh.broker")

# What a session is told, in one line, once the broker is gone.
HELPER_GONE = "the gateway's privileged helper is not running"


class BrokerRefused(SandboxError):
    """The broker answered a request with an error; ``kind`` says what sort."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


class BrokerGone(SandboxError):
    """The broker's connection ended: nothing more can be asked of it."""


class BrokerClient:
    """Requests to the broker over one SOCK_SEQPACKET socket, on the running loop."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        sock.setblocking(False)
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[tuple[dict[str, Any], list[int]]]] = {}
        self._outbox: collections.deque[protocol.Message] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lost: str | None = None
        self._on_lost: list[Callable[[str], None]] = []

    @property
    def lost(self) -> str | None:
        """Why the broker can no longer be asked anything, or None while it can."""
        return self._lost

    def on_lost(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(reason)`` once, when the broker's connection ends."""
        if self._lost is not None:
            callback(self._lost)
        else:
            self._on_lost.append(callback)

    def _start(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._loop.add_reader(self._sock.fileno(), self._readable)
        return self._loop

    async def request(self, op: str, **arguments: Any) -> tuple[dict[str, Any], list[int]]:
        """The broker's result and the descriptors that came with it (the caller's to close).

        Raises BrokerRefused with the broker's one-line reason, BrokerGone once it is gone.
        """
        loop = self._start()
        if self._lost is not None:
            raise BrokerGone(HELPER_GONE)
        request_id = next(self._ids)
        reply: asyncio.Future[tuple[dict[str, Any], list[int]]] = loop.create_future()
        self._pending[request_id] = reply
        self._outbox.append({"id": request_id, "op": op, **arguments})
        self._flush()
        try:
            return await reply
        finally:
            self._pending.pop(request_id, None)

    def send_only(self, op: str, **arguments: Any) -> None:
        """Ask without waiting for the answer (releases); nothing happens once it is gone."""
        if self._lost is not None:
            return
        future = asyncio.ensure_future(self.request(op, **arguments))
        future.add_done_callback(_discard_reply)

    def _flush(self) -> None:
        while self._outbox and self._lost is None:
            try:
                protocol.send(self._sock, self._outbox[0])
            except BlockingIOError:
                assert self._loop is not None
                self._loop.add_writer(self._sock.fileno(), self._writable)
                return
            except OSError as error:
                self._gone(f"cannot write to it: {error.strerror or error}")
                return
            self._outbox.popleft()

    def _writable(self) -> None:
        assert self._loop is not None
        self._loop.remove_writer(self._sock.fileno())
        self._flush()

    def _readable(self) -> None:
        while self._lost is None:
            try:
                received = protocol.receive(self._sock)
            except BlockingIOError:
                return
            except protocol.BadRequest as error:
                log.warning("an unreadable answer from the broker: %s", error)
                continue
            except OSError as error:
                self._gone(f"its connection failed: {error.strerror or error}")
                return
            if received is None:
                self._gone("its connection closed")
                return
            message, fds = received
            request_id = message.get("id") if isinstance(message, dict) else None
            reply = self._pending.get(request_id) if isinstance(request_id, int) else None
            if reply is None or reply.done():
                _close(fds)
                continue
            if "error" in message:
                _close(fds)
                reply.set_exception(
                    BrokerRefused(str(message["error"]), str(message.get("kind", "")))
                )
            else:
                reply.set_result((dict(message.get("result") or {}), fds))

    def _gone(self, why: str) -> None:
        if self._lost is not None:
            return
        self._lost = why
        if self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
            with contextlib.suppress(Exception):
                self._loop.remove_writer(self._sock.fileno())
        self._sock.close()
        self._outbox.clear()
        for reply in self._pending.values():
            if not reply.done():
                reply.set_exception(BrokerGone(HELPER_GONE))
        for callback in self._on_lost:
            callback(why)
        self._on_lost.clear()

    def close(self) -> None:
        self._on_lost.clear()  # closed on purpose: nothing to report
        self._gone("the front closed it")


def _close(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _discard_reply(future: asyncio.Future[tuple[dict[str, Any], list[int]]]) -> None:
    if future.cancelled():
        return
    if future.exception() is None:
        _close(future.result()[1])
