"""Built-in connection tracking: live connections per session, and idle stop on top of it."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

from .hooks import ConnectionTracker, Release, SandboxStopper

log = logging.getLogger("sandbox_ssh.tracking")

SessionCallback = Callable[[str], None]


class InMemoryConnectionTracker:
    """Counts live connections per session ID.

    Every connection counts, whatever its channels: a shell, an SFTP-only
    connection or a forwarding-only one (what IDEs keep open) alike.
    ``on_active`` runs when a session gets its first connection and
    ``on_idle`` when its last one ends.
    """

    def __init__(
        self,
        on_active: SessionCallback | None = None,
        on_idle: SessionCallback | None = None,
    ) -> None:
        self._live: dict[str, int] = {}
        self._lock = threading.Lock()
        self._on_active = on_active
        self._on_idle = on_idle

    def track(self, session_id: str) -> Release:
        with self._lock:
            count = self._live.get(session_id, 0) + 1
            self._live[session_id] = count
        if count == 1 and self._on_active is not None:
            self._on_active(session_id)
        released = False

        def release() -> None:
            nonlocal released
            with self._lock:
                if released:
                    return
                released = True
                remaining = self._live[session_id] - 1
                if remaining:
                    self._live[session_id] = remaining
                else:
                    del self._live[session_id]
            if not remaining and self._on_idle is not None:
                self._on_idle(session_id)

        return release

    def live_connections(self, session_id: str) -> int:
        with self._lock:
            return self._live.get(session_id, 0)

    def active_sessions(self) -> dict[str, int]:
        with self._lock:
            return dict(self._live)


class IdleStopper(InMemoryConnectionTracker):
    """Stops a sandbox once it has had no connection for ``idle_after`` seconds.

    A connection inside that window cancels the stop; the next connection after
    a stop starts the sandbox again through the ensurer. Track and release must
    be called on the event loop the stopper should use.
    """

    def __init__(self, stopper: SandboxStopper, idle_after: float) -> None:
        super().__init__(on_active=self._cancel, on_idle=self._schedule)
        self._stopper = stopper
        self._idle_after = idle_after
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._stopping: set[asyncio.Task[None]] = set()

    def _schedule(self, session_id: str) -> None:
        self._cancel(session_id)
        loop = asyncio.get_running_loop()
        self._timers[session_id] = loop.call_later(self._idle_after, self._fire, session_id)

    def _cancel(self, session_id: str) -> None:
        timer = self._timers.pop(session_id, None)
        if timer is not None:
            timer.cancel()

    def _fire(self, session_id: str) -> None:
        self._timers.pop(session_id, None)
        if self.live_connections(session_id):
            return
        task = asyncio.ensure_future(self._stop(session_id))
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def _stop(self, session_id: str) -> None:
        log.info("session %s idle for %gs: stopping its sandbox", session_id, self._idle_after)
        try:
            await self._stopper.stop_sandbox(session_id)
        except Exception as error:
            log.warning("stopping the idle sandbox of session %s failed: %s", session_id, error)

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()


class CombinedTracker:
    """Tells every tracker of each connection; each release runs exactly once."""

    def __init__(self, *trackers: ConnectionTracker) -> None:
        self._trackers = trackers

    def track(self, session_id: str) -> Release:
        releases = [tracker.track(session_id) for tracker in self._trackers]

        def release() -> None:
            for each in releases:
                try:
                    each()
                except Exception:
                    log.exception("a connection tracker's release failed")

        return release
