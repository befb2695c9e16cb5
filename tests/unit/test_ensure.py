"""The shared, bounded ensure: pure asyncio logic with a fake ensurer."""

from __future__ import annotations

import asyncio

import pytest

from sandbox_ssh._session.ensure import EnsureCoordinator, EnsureTimeout


class CountingEnsurer:
    def __init__(self, delay: float = 0.05, error: Exception | None = None) -> None:
        self.calls = 0
        self.finished = 0
        self.delay = delay
        self.error = error

    async def ensure_sandbox(self, session_id: str) -> None:
        self.calls += 1
        await asyncio.sleep(self.delay)
        if self.error:
            raise self.error
        self.finished += 1


def test_concurrent_ensures_of_one_session_share_one_call() -> None:
    async def scenario() -> CountingEnsurer:
        ensurer = CountingEnsurer()
        coordinator = EnsureCoordinator(timeout=5)
        await asyncio.gather(*(coordinator.ensure(ensurer, "s") for _ in range(50)))
        return ensurer

    ensurer = asyncio.run(scenario())
    assert ensurer.calls == 1 and ensurer.finished == 1


def test_different_sessions_do_not_share() -> None:
    async def scenario() -> int:
        ensurer = CountingEnsurer()
        coordinator = EnsureCoordinator(timeout=5)
        await asyncio.gather(coordinator.ensure(ensurer, "a"), coordinator.ensure(ensurer, "b"))
        return ensurer.calls

    assert asyncio.run(scenario()) == 2


def test_a_leaving_waiter_does_not_cancel_the_shared_ensure() -> None:
    async def scenario() -> tuple[int, int]:
        ensurer = CountingEnsurer(delay=0.2)
        coordinator = EnsureCoordinator(timeout=5)
        leaving = asyncio.ensure_future(coordinator.ensure(ensurer, "s"))
        await asyncio.sleep(0.05)
        leaving.cancel()  # the client disconnected
        await coordinator.ensure(ensurer, "s")  # the next one joins, and it completes
        return ensurer.calls, ensurer.finished

    assert asyncio.run(scenario()) == (1, 1)


def test_timeout_refuses_and_the_next_attempt_starts_fresh() -> None:
    async def scenario() -> int:
        ensurer = CountingEnsurer(delay=10)
        coordinator = EnsureCoordinator(timeout=0.1)
        with pytest.raises(EnsureTimeout, match=r"did not start within 0\.1s"):
            await coordinator.ensure(ensurer, "s")
        assert not coordinator.in_flight("s")
        ensurer.delay = 0
        await coordinator.ensure(ensurer, "s")
        return ensurer.calls

    assert asyncio.run(scenario()) == 2


def test_errors_reach_every_waiter() -> None:
    async def scenario() -> list[BaseException | None]:
        ensurer = CountingEnsurer(error=RuntimeError("no quota"))
        coordinator = EnsureCoordinator(timeout=5)
        results = await asyncio.gather(
            *(coordinator.ensure(ensurer, "s") for _ in range(3)), return_exceptions=True
        )
        return [r if isinstance(r, BaseException) else None for r in results]

    assert [str(e) for e in asyncio.run(scenario())] == ["no quota"] * 3


def test_slow_ensure_triggers_the_notice_once() -> None:
    async def scenario() -> list[str]:
        told: list[str] = []
        coordinator = EnsureCoordinator(timeout=5)
        await coordinator.ensure(CountingEnsurer(delay=0.8), "s", lambda: told.append("slow"))
        await coordinator.ensure(CountingEnsurer(delay=0.0), "t", lambda: told.append("fast"))
        return told

    assert asyncio.run(scenario()) == ["slow"]
