from sandbox_ssh._session.environment import Endpoints, build_environment

ENDPOINTS = Endpoints("10.1.2.3", 50000, "127.0.0.1", 2222)


def test_client_overrides_platform_and_sshd_variables_come_last() -> None:
    env = build_environment(
        {"A": "platform", "B": "platform"}, {"B": "client", "C": "client"}, ENDPOINTS, term=None
    )
    assert env["A"] == "platform" and env["B"] == "client" and env["C"] == "client"
    assert env["SSH_CONNECTION"] == "10.1.2.3 50000 127.0.0.1 2222"
    assert env["SSH_CLIENT"] == "10.1.2.3 50000 2222"
    assert "TERM" not in env


def test_identity_variables_cannot_be_injected() -> None:
    platform = {"HOME": "/x", "USER": "y"}
    client = {"SHELL": "/z", "LOGNAME": "w", "MAIL": "m"}
    env = build_environment(platform, client, ENDPOINTS, term=None)
    assert not {"HOME", "USER", "SHELL", "LOGNAME", "MAIL"} & env.keys()


def test_client_cannot_spoof_ssh_connection_or_term() -> None:
    env = build_environment(
        {}, {"SSH_CONNECTION": "1 2 3 4", "TERM": "evil"}, ENDPOINTS, term="xterm"
    )
    assert env["SSH_CONNECTION"] == "10.1.2.3 50000 127.0.0.1 2222"
    assert env["TERM"] == "xterm"


def test_values_are_kept_byte_for_byte() -> None:
    value = "a b 'c' \"d\" $e \\f\ng ü"
    assert build_environment({"V": value}, {}, ENDPOINTS, term=None)["V"] == value


def test_names_execve_cannot_carry_are_dropped() -> None:
    env = build_environment(
        {"": "x", "A=B": "x", "N\0": "x", "OK": "bad\0value"}, {}, ENDPOINTS, None
    )
    assert not {"", "A=B", "N\0", "OK"} & env.keys()


def test_accept_env_patterns_like_sshd() -> None:
    from sandbox_ssh._session.environment import accepts

    assert accepts("ANYTHING", None)
    assert accepts("LC_ALL", ("LANG", "LC_*"))
    assert not accepts("LD_PRELOAD", ("LANG", "LC_*"))
    assert accepts("X1", ("X?",)) and not accepts("X12", ("X?",))


def test_regression_server_setenv_did_not_win_over_the_clients() -> None:
    # OpenSSH regress/envpass.sh, "server setenv wins": SetEnv is applied after the client's.
    env = build_environment(
        {"_A": "platform"},
        {"_A": "client", "_B": "client"},
        ENDPOINTS,
        term="xterm",
        forced={"_A": "admin", "TERM": "vt100"},
    )
    assert env["_A"] == "admin" and env["_B"] == "client" and env["TERM"] == "vt100"


def test_server_setenv_cannot_spoof_ssh_connection() -> None:
    env = build_environment({}, {}, ENDPOINTS, term=None, forced={"SSH_CONNECTION": "1 2 3 4"})
    assert env["SSH_CONNECTION"] == "10.1.2.3 50000 127.0.0.1 2222"


def test_regression_server_setenv_first_match_did_not_win() -> None:
    # regress/envpass.sh, "server setenv first match wins": SetEnv A=23 A=42 gives 23.
    from sandbox_ssh._session.environment import parse_set_env

    assert parse_set_env(["_A=23", "_A=42", "_B=x=y", "_C="]) == {"_A": "23", "_B": "x=y", "_C": ""}


def test_set_env_refuses_what_it_cannot_set() -> None:
    import pytest

    from sandbox_ssh._session.environment import parse_set_env

    for bad, reason in (
        ("NOEQUALS", "not NAME=VALUE"),
        ("=x", "not NAME=VALUE"),
        ("HOME=/x", "passwd entry"),
    ):
        with pytest.raises(ValueError, match=reason):
            parse_set_env([bad])
