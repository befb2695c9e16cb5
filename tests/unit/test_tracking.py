from __future__ import annotations

import asyncio

from sandbox_ssh import IdleStopper, InMemoryConnectionTracker
from sandbox_ssh.tracking import CombinedTracker


def test_counts_live_connections_and_reports_first_and_last() -> None:
    events: list[str] = []
    tracker = InMemoryConnectionTracker(
        on_active=lambda s: events.append(f"active {s}"),
        on_idle=lambda s: events.append(f"idle {s}"),
    )
    first, second = tracker.track("s"), tracker.track("s")
    other = tracker.track("t")
    assert tracker.active_sessions() == {"s": 2, "t": 1}
    first()
    first()  # a second call is ignored: release happens exactly once
    assert tracker.live_connections("s") == 1
    second()
    other()
    assert tracker.active_sessions() == {}
    assert events == ["active s", "active t", "idle s", "idle t"]


class RecordingStopper:
    def __init__(self) -> None:
        self.stopped: list[str] = []

    async def stop_sandbox(self, session_id: str) -> None:
        self.stopped.append(session_id)


def test_idle_stop_fires_after_the_window_and_reconnect_cancels_it() -> None:
    async def scenario() -> list[str]:
        stopper = RecordingStopper()
        idle = IdleStopper(stopper, idle_after=0.2)
        idle.track("kept")()  # idle now...
        await asyncio.sleep(0.1)
        release = idle.track("kept")  # ...but back within the window
        idle.track("dropped")()
        await asyncio.sleep(0.4)
        assert stopper.stopped == ["dropped"]
        release()
        await asyncio.sleep(0.4)
        idle.close()
        return stopper.stopped

    assert asyncio.run(scenario()) == ["dropped", "kept"]


def test_combined_tracker_tells_each_tracker() -> None:
    a, b = InMemoryConnectionTracker(), InMemoryConnectionTracker()
    release = CombinedTracker(a, b).track("s")
    assert a.live_connections("s") == b.live_connections("s") == 1
    release()
    assert a.live_connections("s") == b.live_connections("s") == 0
