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


def test_default_algorithms_are_all_implemented_and_modern() -> None:
    from sandbox_ssh import Config
    from sandbox_ssh.config import check_algorithms

    config = Config(sandbox_provider=None)  # type: ignore[arg-type]
    check_algorithms(config)
    offered = [*config.kex_algorithms, *config.ciphers, *config.macs, *config.host_key_algorithms]
    assert not [name for name in offered if "sha1" in name or "cbc" in name or name == "ssh-rsa"]
    assert config.compression == ("none",)
    # Encrypt-then-MAC, or SHA-2 in encrypt-and-MAC mode as sshd offers it (libssh2 needs it).
    assert all("etm" in mac or mac in ("hmac-sha2-256", "hmac-sha2-512") for mac in config.macs)
    assert not [kex for kex in config.kex_algorithms if "nistp" in kex]
    assert config.kex_algorithms[0] == "mlkem768x25519-sha256"


def test_unknown_algorithm_names_are_a_clear_error() -> None:
    from sandbox_ssh import Config
    from sandbox_ssh.config import ConfigError, check_algorithms

    config = Config(sandbox_provider=None, ciphers=("aes128-gcm@openssh.com", "rot13"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unsupported cipher algorithm"):
        check_algorithms(config)
