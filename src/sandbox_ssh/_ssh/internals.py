"""Every use of asyncssh's internals, in one place (asyncssh 2.14 to 2.24).

Each function names the private attribute it relies on and why the public API
does not do. tests/unit/test_internals.py pins each one against the installed
asyncssh, so an upgrade that changes one fails there, not in production.

* ``SSHConnection.send_packet``: asyncssh puts an empty SSH_MSG_IGNORE before
  every packet once encryption is on, a defence against the predictable-IV
  attack on CBC ciphers. With CTR and AEAD ciphers it protects nothing, yet it
  doubles the packets the gateway encrypts and writes (two per keystroke
  echo). sshd sends none.
* ``SSHConnection._send``: asyncssh writes each packet to the transport as it
  is made, one system call per 32 KiB packet of bulk data. Packets made in one
  turn of the event loop are written together here (``writelines``, one
  ``writev``), before anything else the loop runs, so the order and the
  latency of single packets are unchanged.
* ``asyncssh.encryption.ChachaCipher``: replaced by ``chacha.FastChachaCipher``
  (fewer cipher objects and copies per packet; same bytes on the wire).
* ``SSHServerConnection.validate_public_key``: every publickey attempt passes
  through it, so sshd's MaxAuthTries is counted there.
* ``SSHChannel._report_response``: answers a request whose reply was deferred
  (``subsystem_requested`` returning None), asyncssh's own mechanism.
* ``SSHConnection._make_keepalive_request``: one round trip to the client.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import asyncssh
import asyncssh.connection
import asyncssh.encryption
from asyncssh.constants import MSG_IGNORE

from .chacha import FastChachaCipher

_EMPTY_STRING = b"\x00\x00\x00\x00"


def is_cbc(cipher: str) -> bool:
    return cipher.endswith("-cbc") or "-cbc@" in cipher


def skip_cbc_ignore_padding(conn: asyncssh.SSHServerConnection) -> None:
    """Drop the empty IGNORE that asyncssh puts before each packet, unless the
    negotiated cipher is CBC.

    Nothing else in asyncssh sends an empty IGNORE, and receivers must discard
    IGNORE (RFC 4253 11.2), so dropping it changes nothing a client can rely on.
    Only IGNORE packets pay for the cipher check.
    """
    send_packet: Callable[..., None] = conn.send_packet

    def without_ignore_padding(pkttype: int, *args: bytes, **kwargs: Any) -> None:
        if (
            pkttype == MSG_IGNORE
            and args == (_EMPTY_STRING,)
            and not kwargs
            and not is_cbc(str(conn.get_extra_info("send_cipher", "")))
        ):
            return
        send_packet(pkttype, *args, **kwargs)

    conn.send_packet = without_ignore_padding  # type: ignore[method-assign]


def coalesce_writes(conn: asyncssh.SSHServerConnection) -> None:
    """Write the packets of one event-loop turn with one ``writelines``.

    The flush is scheduled with ``call_soon`` at the first packet, so it runs
    before any callback scheduled after it, including the transport abort that
    asyncssh schedules when it closes a connection after a last packet.
    """
    loop = asyncio.get_running_loop()
    pending: list[bytes] = []
    # uvloop's transports are not asyncio.WriteTransport subclasses; any has writelines.
    target: list[Any] = [None]

    def flush() -> None:
        transport = target[0]
        batch = pending[:]
        pending.clear()
        if transport is not None and not transport.is_closing():
            with contextlib.suppress(ConnectionError):
                transport.writelines(batch)

    def send(data: bytes) -> None:
        transport = conn._transport
        if transport is None:
            return
        if not pending:
            target[0] = transport
            loop.call_soon(flush)
        pending.append(data)

    conn._send = send  # type: ignore[method-assign]


def use_fast_chacha() -> None:
    """Make every new chacha20-poly1305 key use FastChachaCipher (idempotent)."""
    asyncssh.encryption.ChachaCipher = FastChachaCipher  # type: ignore[attr-defined, assignment]


def wrap_validate_public_key(
    conn: asyncssh.SSHServerConnection,
    wrapper: Callable[[Callable[..., Awaitable[bool]]], Callable[..., Awaitable[bool]]],
) -> None:
    """Route every publickey attempt (query or signed) of ``conn`` through ``wrapper``."""
    original: Callable[..., Awaitable[bool]] = conn.validate_public_key
    conn.validate_public_key = wrapper(original)  # type: ignore[method-assign, assignment]


def answer_deferred_request(chan: asyncssh.SSHServerChannel[bytes], accepted: bool) -> None:
    """Reply to a channel request whose callback returned None (a deferred reply)."""
    chan._report_response(accepted)


async def round_trip(conn: asyncssh.connection.SSHConnection) -> None:
    """Wait for the client to answer one keepalive request."""
    await conn._make_keepalive_request()
