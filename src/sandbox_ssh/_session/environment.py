"""The environment of a process, built the way sshd builds it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

# Set by the login step inside the sandbox from the passwd entry; neither the
# platform nor the client can override them, as with sshd.
IDENTITY_VARIABLES = frozenset({"HOME", "USER", "LOGNAME", "SHELL", "MAIL"})


@dataclass(frozen=True)
class Endpoints:
    client_host: str
    client_port: int
    server_host: str
    server_port: int


@dataclass(frozen=True)
class EnvironmentPolicy:
    """sshd's AcceptEnv (``accept``: patterns, None for all) and SetEnv (``forced``)."""

    accept: tuple[str, ...] | None = None
    forced: Mapping[str, str] = field(default_factory=dict)


def parse_set_env(assignments: Sequence[str]) -> dict[str, str]:
    """``NAME=VALUE`` items as sshd's SetEnv reads them: the first value of a name wins.

    Raises ValueError naming the bad item.
    """
    forced: dict[str, str] = {}
    for assignment in assignments:
        name, equals, value = assignment.partition("=")
        if not equals or not is_valid_name(name) or "\0" in value:
            raise ValueError(f"set-env {assignment!r} is not NAME=VALUE")
        if name in IDENTITY_VARIABLES:
            raise ValueError(
                f"set-env cannot set {name}: it comes from the user's passwd entry in the sandbox"
            )
        forced.setdefault(name, value)
    return forced


def is_valid_name(name: str) -> bool:
    """A variable name a POSIX shell and execve can carry."""
    return bool(name) and "=" not in name and "\0" not in name


def accepts(name: str, patterns: Sequence[str] | None) -> bool:
    """sshd's AcceptEnv: shell-style patterns; None accepts every name."""
    return patterns is None or any(fnmatchcase(name, pattern) for pattern in patterns)


def build_environment(
    fetched: Mapping[str, str],
    client: Mapping[str, str],
    endpoints: Endpoints,
    term: str | None,
    agent_socket: str | None = None,
    forced: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """In sshd's order: platform variables, the client's ``env`` requests over them, the
    agent socket and TERM, then the administrator's SetEnv (``forced``), and last the
    SSH_CLIENT and SSH_CONNECTION that nothing overrides."""
    env: dict[str, str] = {}
    for source in (fetched, client):
        for name, value in source.items():
            if is_valid_name(name) and name not in IDENTITY_VARIABLES and "\0" not in value:
                env[name] = value
    if agent_socket is not None:
        env["SSH_AUTH_SOCK"] = agent_socket
    if term is not None:
        env["TERM"] = term
    else:
        env.pop("SSH_TTY", None)
    env.update(forced or {})
    env["SSH_CLIENT"] = f"{endpoints.client_host} {endpoints.client_port} {endpoints.server_port}"
    env["SSH_CONNECTION"] = (
        f"{endpoints.client_host} {endpoints.client_port} "
        f"{endpoints.server_host} {endpoints.server_port}"
    )
    return env
