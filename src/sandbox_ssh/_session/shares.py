"""Per-tenant shares of something the gateway holds for its tenants (descriptors, above all).

A tenant is a session ID. What one tenant holds at once is bounded, so a sandbox
that opens connection after connection to its own ``-R`` listener, or a client
that opens forward after forward, runs out of its own share and of nobody else's.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

from .._release import once

Release = Callable[[], None]

# Forwarded connections (-L, -D, -W, -R, and socket forwards) one session may have open.
DEFAULT_FORWARDED_PER_SESSION = 512


class TenantShares:
    def __init__(self, per_tenant: int) -> None:
        self.per_tenant = per_tenant
        self._held: collections.Counter[str] = collections.Counter()

    def held(self, tenant: str) -> int:
        return self._held[tenant]

    def take(self, tenant: str) -> Release | None:
        """One unit for ``tenant``, with its release (safe to call twice); None when over."""
        if self._held[tenant] >= self.per_tenant:
            return None
        self._held[tenant] += 1

        def release() -> None:
            self._held[tenant] -= 1
            if self._held[tenant] <= 0:
                del self._held[tenant]

        return once(release)
