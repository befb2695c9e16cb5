"""Trimming asyncssh's per-packet overhead on established connections.

asyncssh sends an empty SSH_MSG_IGNORE before every packet once encryption is on,
a defence against the predictable-IV attack on CBC ciphers. With CTR and AEAD
ciphers it protects nothing, yet it doubles the packets the gateway encrypts and
writes: two per keystroke echo, and one more per 32 KiB of bulk data. sshd sends
none.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncssh
from asyncssh.constants import MSG_IGNORE

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
