"""The per-tenant share of the event loop for output (see _session/loop_share.py)."""

from __future__ import annotations

import pytest

from sandbox_ssh._session.loop_share import LoopShares


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _flood(shares: LoopShares, clock: Clock, tenant: str, chunk: float, seconds: float) -> float:
    """Relay chunks of ``chunk`` loop-seconds for ``seconds``; returns the loop time used."""
    share = shares.join(tenant)
    used = 0.0
    end = clock.now + seconds
    while clock.now < end:
        clock.now += share.delay()
        clock.now += chunk
        share.charge(chunk)
        used += chunk
    return used


def test_regression_a_sandbox_flooding_output_to_many_clients_slowed_every_other_tenant() -> None:
    clock = Clock()
    shares = LoopShares(0.5, clock=clock)
    healthy = shares.join("healthy")
    healthy.touch()  # the healthy tenant just opened a channel
    used = _flood(shares, clock, "noisy", 0.001, 0.5)
    assert 0.24 <= used <= 0.26  # half of the loop, while the other tenant counts as active


def test_two_tenants_moving_bulk_data_do_not_slow_each_other() -> None:
    clock = Clock()
    shares = LoopShares(0.25, clock=clock)
    first, second = shares.join("first"), shares.join("second")
    used = 0.0
    for _ in range(500):
        for share in (first, second):
            clock.now += share.delay() + 0.001
            share.charge(0.001)
            used += 0.001
    assert used == pytest.approx(clock.now - 100.0, rel=0.01)  # the loop never idled


def test_a_tenant_alone_runs_at_full_speed() -> None:
    clock = Clock()
    shares = LoopShares(0.5, clock=clock)
    assert _flood(shares, clock, "noisy", 0.001, 0.5) == pytest.approx(0.5, rel=0.01)


def test_another_tenant_idle_for_a_while_no_longer_slows_a_busy_one() -> None:
    clock = Clock()
    shares = LoopShares(0.5, recent=1.0, clock=clock)
    shares.join("idle").touch()
    clock.now += 1.5
    assert _flood(shares, clock, "busy", 0.001, 0.5) == pytest.approx(0.5, rel=0.01)


def test_a_handshake_in_progress_counts_as_another_tenant() -> None:
    clock = Clock()
    shares = LoopShares(0.25, clock=clock)
    shares.handshake_started()
    assert _flood(shares, clock, "noisy", 0.001, 1.0) == pytest.approx(0.25, abs=0.01)
    shares.handshake_ended()
    assert _flood(shares, clock, "noisy", 0.001, 1.0) == pytest.approx(1.0, rel=0.01)


def test_every_connection_of_a_tenant_shares_one_account() -> None:
    clock = Clock()
    shares = LoopShares(0.5, clock=clock)
    shares.join("healthy").touch()
    first, second = shares.join("noisy"), shares.join("noisy")
    first.charge(0.05)
    assert second.delay() > 0.04
    first.leave()
    second.leave()
    assert shares.join("noisy").delay() == 0  # a fresh account once every holder left


def test_share_one_turns_the_bound_off() -> None:
    clock = Clock()
    shares = LoopShares(1.0, clock=clock)
    shares.join("healthy").touch()
    assert _flood(shares, clock, "noisy", 0.001, 0.5) == pytest.approx(0.5, rel=0.01)


@pytest.mark.parametrize("share", [0, -0.5, 1.5])
def test_a_share_outside_zero_to_one_is_refused(share: float) -> None:
    with pytest.raises(ValueError, match="loop share"):
        LoopShares(share)
