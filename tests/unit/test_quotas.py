"""Per-tenant quotas (see _session/quotas.py), each named after what it stops."""

from __future__ import annotations

import os

import pytest

from sandbox_ssh._session.quotas import QuotaExceeded, QuotaTable, TenantQuota
from sandbox_ssh.hooks import Quotas


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0  # on a clock hour

    def __call__(self) -> float:
        return self.now


def test_a_tenant_opening_connection_after_connection_is_stopped_at_its_quota() -> None:
    table = QuotaTable(16)
    quota = TenantQuota(table, "acme", Quotas(connections=2))
    first, _ = quota.connection(), quota.connection()
    with pytest.raises(QuotaExceeded, match="at most 2 live connections") as refused:
        quota.connection()
    assert refused.value.quota == "connections"
    other = TenantQuota(table, "other", Quotas(connections=2))
    other.connection()  # another tenant is not affected
    first()
    first()  # giving back twice gives back once
    quota.connection()
    with pytest.raises(QuotaExceeded):
        quota.connection()


def test_a_tenant_opening_channels_without_end_is_stopped_at_its_quota() -> None:
    quota = TenantQuota(QuotaTable(16), "acme", Quotas(channels=3))
    releases = [quota.channel() for _ in range(3)]
    with pytest.raises(QuotaExceeded, match="at most 3 open channels"):
        quota.channel()
    releases[0]()
    quota.channel()


def test_a_tenant_starting_processes_in_a_loop_gets_its_quota_each_minute() -> None:
    clock = Clock()
    quota = TenantQuota(QuotaTable(16, clock), "acme", Quotas(starts_per_minute=5))
    for _ in range(5):
        quota.start()
    with pytest.raises(QuotaExceeded, match="at most 5 process starts a minute"):
        quota.start()
    clock.now += 60
    quota.start()


def test_a_tenant_moving_bytes_past_its_hourly_quota_is_refused_until_the_hour_ends() -> None:
    clock = Clock()
    quotas = Quotas(bytes_out_per_hour=1 << 20, bytes_in_per_hour=1 << 30)
    quota = TenantQuota(QuotaTable(16, clock), "acme", quotas)
    quota.traffic(1 << 19, 0)
    quota.traffic(1 << 19, 0)  # exactly the quota is still allowed
    with pytest.raises(QuotaExceeded, match="at most 1 MiB an hour to clients") as refused:
        quota.traffic(1, 0)
    assert refused.value.quota == "bytes_out_per_hour"
    with pytest.raises(QuotaExceeded):
        quota.check_traffic()  # a new connection in the same hour
    clock.now += 3600
    quota.check_traffic()
    with pytest.raises(QuotaExceeded, match="at most 1 GiB an hour from clients"):
        quota.traffic(0, (1 << 30) + 1)


def test_unset_quotas_bound_nothing() -> None:
    quota = TenantQuota(QuotaTable(16), "acme", Quotas())
    for _ in range(1000):
        quota.connection()
        quota.channel()
        quota.start()
    quota.traffic(1 << 40, 1 << 40)


def test_a_full_table_reuses_idle_tenants_and_otherwise_fails_open() -> None:
    clock = Clock()
    table = QuotaTable(4, clock)
    holding = [TenantQuota(table, f"t{n}", Quotas(connections=1)) for n in range(4)]
    releases = [quota.connection() for quota in holding]
    newcomer = TenantQuota(table, "new", Quotas(connections=1))
    newcomer.connection()  # no free slot: not counted (fails open), and not refused
    newcomer.connection()
    releases[0]()
    clock.now += 3600
    newcomer.connection()  # t0's slot was idle and is reused
    with pytest.raises(QuotaExceeded):
        newcomer.connection()


def test_the_hook_s_quotas_replace_the_gateway_s_one_by_one() -> None:
    gateway = Quotas(connections=10, channels=20)
    assert gateway.over(Quotas(channels=5, starts_per_minute=7)) == Quotas(
        connections=10, channels=5, starts_per_minute=7
    )
    assert gateway.over(None) == gateway


def test_workers_forked_after_the_table_count_together() -> None:
    table = QuotaTable(16)
    quota = TenantQuota(table, "acme", Quotas(connections=2))
    pid = os.fork()
    if pid == 0:  # a second worker takes one connection and exits holding it
        try:
            quota.connection()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    quota.connection()
    with pytest.raises(QuotaExceeded):
        quota.connection()
