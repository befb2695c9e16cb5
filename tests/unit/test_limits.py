from sandbox_ssh._ssh.limits import SourceGuard


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_allows_a_burst_then_refills() -> None:
    clock = Clock()
    guard = SourceGuard(connections_per_minute=3, clock=clock)
    assert [guard.admit("10.0.0.1") for _ in range(3)] == [None, None, None]
    assert guard.admit("10.0.0.1") == "connection rate limit exceeded"
    assert guard.admit("10.0.0.2") is None  # per address
    clock.now += 20  # one token back after 20 s at 3 per minute
    assert guard.admit("10.0.0.1") is None
    assert guard.admit("10.0.0.1") == "connection rate limit exceeded"


def test_ban_after_failures_expires() -> None:
    clock = Clock()
    guard = SourceGuard(connections_per_minute=0, ban_after_failures=3, ban_seconds=60, clock=clock)
    assert [guard.auth_failed("a") for _ in range(3)] == [False, False, True]
    assert guard.admit("a") == "banned after repeated authentication failures"
    assert guard.admit("b") is None
    clock.now += 61
    assert guard.admit("a") is None


def test_old_failures_do_not_count() -> None:
    clock = Clock()
    guard = SourceGuard(ban_after_failures=2, ban_seconds=10, clock=clock)
    guard.auth_failed("a")
    clock.now += 11
    assert guard.auth_failed("a") is False
    assert guard.admit("a") is None


def test_zero_switches_both_off() -> None:
    guard = SourceGuard(connections_per_minute=0, ban_after_failures=0)
    assert all(guard.admit("a") is None for _ in range(10_000))
    assert not any(guard.auth_failed("a") for _ in range(100))
