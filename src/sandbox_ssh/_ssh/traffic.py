"""Bytes each way on a TCP connection, read from the kernel (Linux TCP_INFO).

asyncio's event loops (uvloop in particular) do not let a protocol's data path
be wrapped after the fact, and the kernel counts these bytes anyway. A duplicate
of the socket's descriptor keeps them readable until the connection is gone.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct

_TCP_INFO_SIZE = 232
_BYTES_ACKED_OFFSET = 120  # struct tcp_info: tcpi_bytes_acked (Linux >= 4.1)
_BYTES_RECEIVED_OFFSET = 128  # tcpi_bytes_received (Linux >= 4.1)


class TrafficCounter:
    def __init__(self, sock: object) -> None:
        self._sock: socket.socket | None = None
        fileno = getattr(sock, "fileno", None)
        family = getattr(sock, "family", None)
        if fileno is None or family not in (socket.AF_INET, socket.AF_INET6):
            return
        with contextlib.suppress(OSError):
            self._sock = socket.socket(fileno=os.dup(fileno()))

    def read(self) -> tuple[int | None, int | None]:
        """(bytes sent, bytes received) so far."""
        if self._sock is None:
            return None, None
        try:
            info = self._sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
        except OSError:
            return None, None
        if len(info) < _BYTES_RECEIVED_OFFSET + 8:
            return None, None
        sent = struct.unpack_from("Q", info, _BYTES_ACKED_OFFSET)[0]
        received = struct.unpack_from("Q", info, _BYTES_RECEIVED_OFFSET)[0]
        return int(sent), int(received)

    def finish(self) -> tuple[int | None, int | None]:
        """(bytes sent, bytes received), then release the descriptor."""
        try:
            return self.read()
        finally:
            if self._sock is not None:
                self._sock.close()
                self._sock = None
