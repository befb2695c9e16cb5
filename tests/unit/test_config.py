import pytest

from sandbox_ssh.config import format_address, parse_address, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:2222", ("127.0.0.1", 2222)),
        (":2222", ("", 2222)),
        ("[::1]:22", ("::1", 22)),
        ("localhost:0", ("localhost", 0)),
        ("0.0.0.0:65535", ("0.0.0.0", 65535)),
    ],
)
def test_valid_addresses(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    "text", ["2222", "host", "127.0.0.1:", "127.0.0.1:70000", "example.com:22", "1.2.3.4:-1"]
)
def test_invalid_addresses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_address(text)


def test_ipv6_is_bracketed() -> None:
    assert format_address("::1", 22) == "[::1]:22"
    assert format_address("127.0.0.1", 22) == "127.0.0.1:22"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("5m", 300), ("1h30m", 5400), ("0.5s", 0.5), (" 2M ", 120)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "5x", "1h-2m", "-5"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)
