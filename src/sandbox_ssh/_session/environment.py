"""The environment of a process, built the way sshd builds it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
) -> dict[str, str]:
    """Platform variables first, the client's ``env`` requests over them, then sshd's own."""
    env: dict[str, str] = {}
    for source in (fetched, client):
        for name, value in source.items():
            if is_valid_name(name) and name not in IDENTITY_VARIABLES and "\0" not in value:
                env[name] = value
    env["SSH_CLIENT"] = f"{endpoints.client_host} {endpoints.client_port} {endpoints.server_port}"
    env["SSH_CONNECTION"] = (
        f"{endpoints.client_host} {endpoints.client_port} "
        f"{endpoints.server_host} {endpoints.server_port}"
    )
    if agent_socket is not None:
        env["SSH_AUTH_SOCK"] = agent_socket  # set by the gateway, as by sshd: not overridable
    if term is not None:
        env["TERM"] = term
    else:
        env.pop("SSH_TTY", None)
    return env
