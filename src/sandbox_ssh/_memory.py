"""Giving freed memory back to the system after a burst.

A stalled client can make a connection hold up to its SSH window of output in the
gateway; when such connections end, glibc keeps the freed heap, so the gateway's
RSS would stay at its peak. Shortly after connections end, the heap is trimmed.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
from collections.abc import Callable

_TRIM_DELAY = 1.0


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
    except OSError:
        return None
    trim: Callable[[int], int] | None = getattr(libc, "malloc_trim", None)  # glibc only
    return trim


class HeapTrimmer:
    """``soon()``: trim once, a moment after the latest call (many calls, one trim)."""

    def __init__(self, delay: float = _TRIM_DELAY) -> None:
        self._delay = delay
        self._trim = _malloc_trim()
        self._pending: asyncio.TimerHandle | None = None

    def soon(self) -> None:
        if self._trim is None or self._pending is not None:
            return
        self._pending = asyncio.get_running_loop().call_later(self._delay, self._run)

    def _run(self) -> None:
        self._pending = None
        if self._trim is not None:
            self._trim(0)

    def cancel(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
