"""Per-source-address admission: a connection rate, and a ban after repeated auth failures."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class SourceGuard:
    """Decides whether a new connection from an address is admitted.

    ``connections_per_minute`` is a token bucket per address (bursts up to that
    many); ``ban_after_failures`` rejected keys within ``ban_seconds`` ban the
    address for ``ban_seconds``. Zero switches either off.
    """

    connections_per_minute: int = 3000
    ban_after_failures: int = 20
    ban_seconds: float = 600.0
    clock: Callable[[], float] = time.monotonic
    _tokens: dict[str, tuple[float, float]] = field(default_factory=dict)
    _failures: dict[str, deque[float]] = field(default_factory=dict)
    _banned_until: dict[str, float] = field(default_factory=dict)

    def admit(self, address: str) -> str | None:
        """None to admit, or the reason the connection is dropped."""
        now = self.clock()
        banned_until = self._banned_until.get(address)
        if banned_until is not None:
            if now < banned_until:
                return "banned after repeated authentication failures"
            del self._banned_until[address]
        if self.connections_per_minute:
            capacity = float(self.connections_per_minute)
            tokens, last = self._tokens.get(address, (capacity, now))
            tokens = min(capacity, tokens + (now - last) * capacity / 60.0)
            if tokens < 1.0:
                self._tokens[address] = (tokens, now)
                return "connection rate limit exceeded"
            self._tokens[address] = (tokens - 1.0, now)
        self._forget_old(now)
        return None

    def auth_failed(self, address: str) -> bool:
        """Record a rejected key; True when this failure bans the address."""
        if not self.ban_after_failures:
            return False
        now = self.clock()
        recent = self._failures.setdefault(address, deque())
        recent.append(now)
        while recent and recent[0] < now - self.ban_seconds:
            recent.popleft()
        if len(recent) >= self.ban_after_failures:
            self._banned_until[address] = now + self.ban_seconds
            recent.clear()
            return True
        return False

    def _forget_old(self, now: float) -> None:
        # Bounded memory: drop full buckets and stale failure records now and then.
        if len(self._tokens) > 10_000:
            capacity = float(self.connections_per_minute)
            self._tokens = {
                a: (t, ts)
                for a, (t, ts) in self._tokens.items()
                if t + (now - ts) * capacity / 60.0 < capacity
            }
        if len(self._failures) > 10_000:
            self._failures = {
                a: d for a, d in self._failures.items() if d and d[-1] >= now - self.ban_seconds
            }
