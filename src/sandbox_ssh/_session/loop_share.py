"""Each tenant's share of the event loop for relaying output, while another is interactive.

Relaying output is the gateway's heaviest work (reading, then encrypting every
byte on the one event loop). A sandbox that floods output to many clients could
keep the loop busy enough that every other tenant's handshake and keystrokes
wait behind it. So while another tenant is interactive, a tenant's output relay
may use at most ``share`` of the loop's time: after each chunk it waits in
proportion to the time the chunk took, as in fair queueing.

A tenant is interactive while it is handshaking (before authentication no tenant
is known, so every handshake counts as another tenant), and for ``recent``
seconds after it opened a channel or sent a small input (a keystroke, a request).
Bulk output is not interaction: two tenants downloading at once are not slowed by
each other beyond what the loop's turns give each, and a tenant alone runs at full
speed.
"""

from __future__ import annotations

import time
from collections.abc import Callable

DEFAULT_TENANT_LOOP_SHARE = 0.25
# How long after its last interaction a tenant still counts as interactive.
_RECENT = 1.0
# Loop time a tenant may spend at once before the share applies, in seconds.
_BURST = 0.005


class LoopShares:
    def __init__(
        self,
        share: float = DEFAULT_TENANT_LOOP_SHARE,
        *,
        recent: float = _RECENT,
        burst: float = _BURST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < share <= 1:
            raise ValueError("the loop share must be above 0 and at most 1")
        self.share = share
        self._recent = recent
        self._burst = burst
        self._clock = clock
        self._handshaking = 0
        # The two most recently active distinct tenants, newest first: enough to answer
        # "is anyone but me active?" in constant time.
        self._latest: list[tuple[str, float]] = []
        self._tenants: dict[str, TenantLoopShare] = {}

    def handshake_started(self) -> None:
        self._handshaking += 1

    def handshake_ended(self) -> None:
        self._handshaking = max(0, self._handshaking - 1)

    def join(self, tenant: str) -> TenantLoopShare:
        """The tenant's share, shared by all its connections; ``leave`` once per join."""
        held = self._tenants.get(tenant)
        if held is None:
            held = self._tenants[tenant] = TenantLoopShare(self, tenant)
        held.holders += 1
        return held

    def _left(self, held: TenantLoopShare) -> None:
        held.holders -= 1
        if held.holders <= 0 and self._tenants.get(held.tenant) is held:
            del self._tenants[held.tenant]

    def _touch(self, tenant: str, now: float) -> None:
        latest = self._latest
        if latest and latest[0][0] == tenant:
            latest[0] = (tenant, now)
        else:
            self._latest = [(tenant, now), latest[0]] if latest else [(tenant, now)]

    def others_active(self, tenant: str, now: float) -> bool:
        if self.share >= 1:
            return False
        if self._handshaking:
            return True
        since = now - self._recent
        return any(other != tenant and at >= since for other, at in self._latest)


class TenantLoopShare:
    """One tenant's account: how far ahead of its share its output relay has run."""

    def __init__(self, shares: LoopShares, tenant: str) -> None:
        self._shares = shares
        self.tenant = tenant
        self.holders = 0
        # When the tenant may relay again; the fair-queueing "virtual finish time".
        self._ready_at = 0.0

    def touch(self) -> None:
        """The tenant did something interactive (a small input, a new channel)."""
        self._shares._touch(self.tenant, self._shares._clock())

    def charge(self, seconds: float) -> None:
        """Account ``seconds`` of loop time spent relaying this tenant's output."""
        shares = self._shares
        now = shares._clock()
        if not shares.others_active(self.tenant, now):
            self._ready_at = now
            return
        started = now - seconds
        self._ready_at = max(self._ready_at, started - shares._burst) + seconds / shares.share

    def delay(self) -> float:
        """How long the tenant's output must wait before its next chunk (0: go on)."""
        shares = self._shares
        now = shares._clock()
        if self._ready_at <= now or not shares.others_active(self.tenant, now):
            return 0.0
        return self._ready_at - now

    def leave(self) -> None:
        self._shares._left(self)
