"""Per-tenant shares: what one session ID may hold at once."""

from __future__ import annotations

from sandbox_ssh._session.shares import TenantShares


def test_regression_a_sandbox_dialling_its_own_forward_spent_every_descriptor() -> None:
    shares = TenantShares(per_tenant=3)
    held = [shares.take("hostile") for _ in range(3)]
    assert all(held) and shares.take("hostile") is None
    assert shares.take("healthy") is not None  # another tenant has its own share
    release = held[0]
    assert release is not None
    release()
    release()  # twice is once
    assert shares.held("hostile") == 2
    assert shares.take("hostile") is not None
