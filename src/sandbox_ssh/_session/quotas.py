"""Per-tenant quotas: live connections, channels, process starts a minute, bytes an hour.

A tenant is the session ID, or the tenant a user-info hook names. The counters
live in one table of anonymous shared memory made before ``serve --workers``
forks, under one lock, so a quota holds across workers; the gateway keeps no
store shared between replicas (a platform running several counts in its own
hooks). The table holds a hash of each tenant's name, never the name.

Rates use fixed windows (a clock minute, a clock hour). Bytes are counted from
the kernel's counters of each connection, about once a second, so a connection
may pass its byte quota by up to a second of traffic before it is closed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import mmap
import multiprocessing
import struct
import time
from collections.abc import Callable
from typing import NoReturn

from .._metrics import Metrics
from .._release import once
from ..hooks import Quotas

Release = Callable[[], None]

# key, used, connections, channels, starts window, starts, bytes window, bytes in, bytes out
_SLOT = struct.Struct("<16s?3xiiqqqqq")
_EMPTY, _KEY_SIZE = bytes(16), 16
DEFAULT_QUOTA_TENANTS = 4096


class QuotaExceeded(Exception):
    """A quota refused something; ``quota`` names it (for metrics), the message is one line."""

    def __init__(self, quota: str, message: str) -> None:
        super().__init__(message)
        self.quota = quota


def _size(amount: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if amount >= scale and amount % scale == 0:
            return f"{amount // scale} {unit}"
    return f"{amount} bytes"


@dataclasses.dataclass
class _Counters:
    used: bool
    connections: int
    channels: int
    starts_window: int
    starts: int
    bytes_window: int
    bytes_in: int
    bytes_out: int


class QuotaTable:
    """Counters of up to ``tenants`` tenants at once, shared by every forked worker."""

    def __init__(
        self, tenants: int = DEFAULT_QUOTA_TENANTS, clock: Callable[[], float] = time.time
    ) -> None:
        self._slots = tenants
        self._memory = mmap.mmap(-1, tenants * _SLOT.size)  # MAP_SHARED|MAP_ANONYMOUS
        self._lock = multiprocessing.Lock()
        self._clock = clock

    def _read(self, index: int) -> tuple[bytes, _Counters]:
        key, *values = _SLOT.unpack_from(self._memory, index * _SLOT.size)
        return key, _Counters(*values)

    def _write(self, index: int, key: bytes, counters: _Counters) -> None:
        _SLOT.pack_into(self._memory, index * _SLOT.size, key, *dataclasses.astuple(counters))

    def _slot(self, key: bytes) -> tuple[int, _Counters] | None:
        """The tenant's slot (claimed if new), by open addressing; None when the table is full.

        A slot whose tenant holds nothing and whose windows have passed is free again."""
        start = int.from_bytes(key[:4], "little") % self._slots
        hour = int(self._clock() // 3600)
        free: int | None = None
        for step in range(self._slots):
            index = (start + step) % self._slots
            found, counters = self._read(index)
            if counters.used and found == key:
                return index, counters
            idle = not counters.used or (
                counters.connections <= 0
                and counters.channels <= 0
                and counters.bytes_window < hour
                and counters.starts_window < hour * 60
            )
            if free is None and idle:
                free = index
            if not counters.used and found == _EMPTY:
                break  # never claimed: the key is not further on
        if free is None:
            return None
        fresh = _Counters(True, 0, 0, 0, 0, 0, 0, 0)
        self._write(free, key, fresh)
        return free, fresh

    def update(self, key: bytes, change: Callable[[_Counters], None]) -> bool:
        """Apply ``change`` to the tenant's counters under the lock; False if the table is full."""
        with self._lock:
            slot = self._slot(key)
            if slot is None:
                return False
            index, counters = slot
            change(counters)
            self._write(index, key, counters)
            return True

    def now(self) -> float:
        return self._clock()


class TenantQuota:
    """One connection's view of its tenant's quotas."""

    def __init__(
        self, table: QuotaTable, tenant: str, quotas: Quotas, metrics: Metrics | None = None
    ) -> None:
        self._table = table
        self._key = hashlib.blake2b(tenant.encode(), digest_size=_KEY_SIZE).digest()
        self.quotas = quotas
        self._metrics = metrics or Metrics()

    def _refuse(self, quota: str, message: str) -> NoReturn:
        """Count the refusal by quota name (never by tenant), and raise it."""
        self._metrics.refusals.labels(f"quota_{quota}").inc()
        raise QuotaExceeded(quota, message)

    def _hold(self, quota: str, limit: int | None, what: str) -> Release:
        if limit is None:
            return lambda: None
        refused = False

        def take(counters: _Counters) -> None:
            nonlocal refused
            held = getattr(counters, quota)
            refused = held >= limit
            if not refused:
                setattr(counters, quota, held + 1)

        if not self._table.update(self._key, take):
            return lambda: None  # a full table fails open: quotas bound, they do not lock out
        if refused:
            self._refuse(quota, f"tenant quota: at most {limit} {what} at once")

        def give_back(counters: _Counters) -> None:
            setattr(counters, quota, max(0, getattr(counters, quota) - 1))

        def release() -> None:
            self._table.update(self._key, give_back)

        return once(release)

    def connection(self) -> Release:
        return self._hold("connections", self.quotas.connections, "live connections")

    def channel(self) -> Release:
        return self._hold("channels", self.quotas.channels, "open channels")

    def start(self) -> None:
        """Count one process start; QuotaExceeded beyond the minute's quota."""
        limit = self.quotas.starts_per_minute
        if limit is None:
            return
        minute = int(self._table.now() // 60)
        refused = False

        def count(counters: _Counters) -> None:
            nonlocal refused
            if counters.starts_window != minute:
                counters.starts_window, counters.starts = minute, 0
            refused = counters.starts >= limit
            if not refused:
                counters.starts += 1

        self._table.update(self._key, count)
        if refused:
            self._refuse(
                "starts_per_minute", f"tenant quota: at most {limit} process starts a minute"
            )

    def traffic(self, sent: int, received: int) -> None:
        """Count bytes sent to and received from the client; QuotaExceeded past an hour's quota."""
        out_limit, in_limit = self.quotas.bytes_out_per_hour, self.quotas.bytes_in_per_hour
        if out_limit is None and in_limit is None:
            return
        hour = int(self._table.now() // 3600)
        totals = (0, 0)

        def count(counters: _Counters) -> None:
            nonlocal totals
            if counters.bytes_window != hour:
                counters.bytes_window, counters.bytes_in, counters.bytes_out = hour, 0, 0
            counters.bytes_out += sent
            counters.bytes_in += received
            totals = (counters.bytes_out, counters.bytes_in)

        self._table.update(self._key, count)
        if out_limit is not None and totals[0] > out_limit:
            self._refuse(
                "bytes_out_per_hour", f"tenant quota: at most {_size(out_limit)} an hour to clients"
            )
        if in_limit is not None and totals[1] > in_limit:
            self._refuse(
                "bytes_in_per_hour", f"tenant quota: at most {_size(in_limit)} an hour from clients"
            )

    def check_traffic(self) -> None:
        """QuotaExceeded if this hour's bytes are already past a quota (for a new connection)."""
        self.traffic(0, 0)


_shared_table: QuotaTable | None = None


def shared_quota_table() -> QuotaTable:
    """This process's table; made before ``serve --workers`` forks, it is every worker's."""
    global _shared_table
    if _shared_table is None:
        _shared_table = QuotaTable()
    return _shared_table
