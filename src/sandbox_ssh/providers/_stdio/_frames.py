"""The frames the in-sandbox helper multiplexes accepted connections in (see _helper.py)."""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterator

HEADER = struct.Struct(">IBI")  # connection ID, kind, payload length
MAX_PAYLOAD = 1 << 20


class Kind(enum.IntEnum):
    OPEN = 1  # helper -> gateway: a new connection was accepted
    DATA = 2
    EOF = 3  # that side will send no more
    CLOSE = 4  # the connection is gone


def encode(kind: Kind, conn_id: int, data: bytes = b"") -> bytes:
    return HEADER.pack(conn_id, kind, len(data)) + data


class FrameReader:
    """Splits a byte stream into (kind, connection ID, payload)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[tuple[Kind, int, bytes]]:
        self._buffer += data
        while len(self._buffer) >= HEADER.size:
            conn_id, kind, size = HEADER.unpack_from(self._buffer)
            if size > MAX_PAYLOAD or kind not in Kind._value2member_map_:
                raise ValueError(f"bad frame from the sandbox helper (kind {kind}, size {size})")
            end = HEADER.size + size
            if len(self._buffer) < end:
                return
            payload = bytes(self._buffer[HEADER.size : end])
            del self._buffer[:end]
            yield Kind(kind), conn_id, payload
