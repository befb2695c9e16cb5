"""The single source of configuration for a gateway."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from ._session.channel import SubsystemConfig
from ._session.forwarding import ForwardingKind, ForwardingPolicy
from .hooks import (
    ConnectionTracker,
    EnvVarFetcher,
    SandboxEnsurer,
    SandboxProvider,
    UserInfoFetcher,
)


@dataclass
class Config:
    """How a :class:`~sandbox_ssh.Server` listens and where it sends sessions.

    ``address`` is ``"host:port"``; an empty host (``":2222"``) means every
    interface, and port 0 picks a free port.
    """

    sandbox_provider: SandboxProvider
    address: str = "127.0.0.1:2222"
    host_key_path: str | Path = "ssh_host_ed25519_key"
    sandbox_ensurer: SandboxEnsurer | None = None
    user_info_fetcher: UserInfoFetcher | None = None
    env_var_fetcher: EnvVarFetcher | None = None
    connection_tracker: ConnectionTracker | None = None
    # Longest a client may take from TCP connect to finished authentication.
    login_timeout: float = 30.0
    # Forwarding kinds that are switched off; everything is dialled inside the sandbox.
    disabled_forwarding: frozenset[ForwardingKind] = frozenset()
    # The sandbox's sftp-server; None searches the usual OpenSSH locations.
    sftp_server_path: str | None = None
    # Longest an ensure may take before the client is refused.
    ensure_timeout: float = 60.0
    # Run as root when the UserInfoFetcher fails, as the original did (logged each time).
    user_fallback_root: bool = False
    # Client env variables accepted (shell-style patterns, like sshd's AcceptEnv); None: all.
    accept_env: tuple[str, ...] | None = None
    server_version: str = "sandbox-ssh"


def parse_address(address: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` for IPv6); an empty host means every interface."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"listen address {address!r} is not HOST:PORT")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"listen address {address!r} has a port beyond 65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if host != "localhost":
                raise ValueError(
                    f"listen address {address!r}: host must be an IP address or localhost"
                ) from None
    return host, port


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def forwarding_policy(config: Config) -> ForwardingPolicy:
    return ForwardingPolicy(frozenset(config.disabled_forwarding))


def subsystem_config(config: Config) -> SubsystemConfig:
    if config.sftp_server_path:
        return SubsystemConfig(sftp_server_paths=(config.sftp_server_path,))
    return SubsystemConfig()


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([hms]?)")
_SECONDS_PER_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "": 1.0}


def parse_duration(text: str) -> float:
    """Seconds in ``90``, ``90s``, ``5m``, ``1h30m`` or ``0.5s``."""
    position, total = 0, 0.0
    cleaned = text.strip().lower()
    while position < len(cleaned):
        match = _DURATION_PART.match(cleaned, position)
        if not match or match.end() == position:
            raise ValueError(f"duration {text!r} is not like 90s, 5m or 1h30m")
        total += float(match.group(1)) * _SECONDS_PER_UNIT[match.group(2)]
        position = match.end()
    if not cleaned:
        raise ValueError("empty duration")
    return total
