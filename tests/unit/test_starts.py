"""Process starts: bounded, and served round-robin over sandboxes and connections."""

from __future__ import annotations

import asyncio

import pytest

from sandbox_ssh._session.starts import StartScheduler, StartTimeout


async def _record_order(scheduler: StartScheduler, requests: list[tuple[str, str]]) -> list[str]:
    order: list[str] = []
    gate = asyncio.Event()

    async def start(label: str) -> None:
        order.append(label)
        await gate.wait()

    async def blocker() -> None:
        await scheduler.run("busy", "holder", gate.wait)

    holder = asyncio.ensure_future(blocker())
    await asyncio.sleep(0)
    tasks = []
    for sandbox, connection in requests:
        label = f"{sandbox}/{connection}"
        tasks.append(
            asyncio.ensure_future(
                scheduler.run(sandbox, connection, lambda label=label: start(label))  # type: ignore[misc]
            )
        )
        await asyncio.sleep(0)
    gate.set()
    await asyncio.gather(holder, *tasks)
    return order


def test_one_busy_connection_does_not_starve_the_others() -> None:
    scheduler = StartScheduler(concurrency=1)
    requests = [("s", "busy")] * 4 + [("s", "new")]
    order = asyncio.run(_record_order(scheduler, requests))
    # The newcomer's one session does not wait behind the busy connection's four.
    assert order == ["s/new", "s/busy", "s/busy", "s/busy", "s/busy"]


def test_a_newcomer_goes_before_connections_already_served() -> None:
    async def scenario() -> list[str]:
        scheduler = StartScheduler(concurrency=1)
        order: list[str] = []
        release: asyncio.Queue[None] = asyncio.Queue()
        started: asyncio.Queue[str] = asyncio.Queue()

        async def start(name: str) -> None:
            order.append(name)
            started.put_nowait(name)
            await release.get()

        def request(name: str) -> asyncio.Future[None]:
            return asyncio.ensure_future(scheduler.run("s", name, lambda: start(name)))

        async def step() -> None:
            release.put_nowait(None)  # the running start ends; the next one is chosen
            await started.get()

        tasks = [request(name) for name in ("x", "a", "a", "a", "b", "b", "b")]
        await started.get()
        for _ in range(3):
            await step()
        tasks.append(request("c"))
        for _ in range(4):
            await step()
        release.put_nowait(None)
        await asyncio.gather(*tasks)
        return order

    # a and b take turns; c, arriving late, goes next instead of after their backlog.
    assert asyncio.run(scenario()) == ["x", "a", "b", "a", "c", "b", "a", "b"]


def test_regression_a_newcomer_waited_for_a_bursts_first_round() -> None:
    # The bench's burst: many connections, each with several sessions queued. A
    # connection arriving during the burst's first round was served after every burst
    # connection not yet served once (about 1 s at 50 starts/s); it now goes next.
    scheduler = StartScheduler(concurrency=1)
    burst = [("s", f"c{i}") for i in range(5) for _ in range(3)]
    order = asyncio.run(_record_order(scheduler, [*burst, ("s", "new")]))
    assert order.index("s/new") == 0
    # Then the burst connections take turns, each one start per round.
    assert order[1:6] == [f"s/c{i}" for i in range(5)]


def test_one_busy_sandbox_does_not_starve_another() -> None:
    scheduler = StartScheduler(concurrency=1)
    requests = [("busy", f"c{i}") for i in range(4)] + [("quiet", "c9")]
    order = asyncio.run(_record_order(scheduler, requests))
    assert order[:2] == ["busy/c0", "quiet/c9"]


def test_concurrency_is_bounded() -> None:
    async def scenario() -> int:
        scheduler = StartScheduler(concurrency=3, per_sandbox=3)
        running = peak = 0

        async def start() -> None:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.001)
            running -= 1

        await asyncio.gather(*(scheduler.run("s", f"c{i % 5}", start) for i in range(40)))
        assert scheduler.running == 0 and scheduler.waiting == 0
        return peak

    assert asyncio.run(scenario()) == 3


def test_a_cancelled_waiter_gives_its_turn_away() -> None:
    async def scenario() -> None:
        scheduler = StartScheduler(concurrency=1)
        gate = asyncio.Event()
        first = asyncio.ensure_future(scheduler.run("s", "a", gate.wait))
        await asyncio.sleep(0)
        waiter = asyncio.ensure_future(scheduler.run("s", "b", gate.wait))
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert scheduler.waiting == 0
        gate.set()
        await first
        # The slot is free again: a new start runs at once.
        assert await scheduler.run("s", "c", lambda: asyncio.sleep(0, "ran")) == "ran"

    asyncio.run(scenario())


def test_a_failing_start_releases_its_slot() -> None:
    async def scenario() -> None:
        scheduler = StartScheduler(concurrency=1)

        async def fail() -> None:
            raise RuntimeError("refused")

        with pytest.raises(RuntimeError):
            await scheduler.run("s", "a", fail)
        assert scheduler.running == 0

    asyncio.run(scenario())


def test_regression_a_sandbox_whose_starts_hang_held_every_start_slot() -> None:
    """FIFO /etc/group: runc hangs in every start of that sandbox; others still start."""

    async def scenario() -> None:
        scheduler = StartScheduler(concurrency=4, timeout=60)
        never = asyncio.Event()
        hostile = [
            asyncio.ensure_future(scheduler.run("hostile", f"c{i}", never.wait)) for i in range(12)
        ]
        await asyncio.sleep(0)
        assert scheduler.running_in("hostile") == 2  # its share: half of the slots
        healthy = await asyncio.wait_for(
            scheduler.run("healthy", "h", lambda: asyncio.sleep(0, "ran")), 1
        )
        assert healthy == "ran"
        for task in hostile:
            task.cancel()
        await asyncio.gather(*hostile, return_exceptions=True)
        assert scheduler.running == 0 and scheduler.waiting == 0

    asyncio.run(scenario())


def test_regression_a_start_that_never_answers_held_its_slot_forever() -> None:
    """A /bin/sh that never runs: the start gives up with one line, and its slot is free."""

    async def scenario() -> None:
        scheduler = StartScheduler(concurrency=1, timeout=0.05)
        with pytest.raises(StartTimeout, match=r"did not start the process within 0\.05 s"):
            await scheduler.run("hostile", "c", asyncio.Event().wait)
        assert scheduler.running == 0
        assert await scheduler.run("hostile", "c", lambda: asyncio.sleep(0, "ok")) == "ok"

    asyncio.run(scenario())
