"""The single source of configuration for a gateway."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ._session.audit import AuditSink
from ._session.channel import SubsystemConfig
from ._session.environment import parse_set_env
from ._session.forwarding import ForwardingKind, ForwardingPolicy
from ._session.loop_share import DEFAULT_TENANT_LOOP_SHARE
from ._session.recording import RecordingPolicy
from ._session.resolve import DEFAULT_SESSION_ID_PATTERN
from ._session.shares import DEFAULT_FORWARDED_PER_SESSION
from ._ssh import algorithms
from .hooks import (
    ConnectionAdmitter,
    ConnectionTracker,
    EnvVarFetcher,
    Quotas,
    SandboxEnsurer,
    SandboxProvider,
    TokenVerifier,
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
    # More host keys to offer (e.g. an RSA key for old clients; signed with SHA-2 only).
    extra_host_key_paths: tuple[str | Path, ...] = ()
    sandbox_ensurer: SandboxEnsurer | None = None
    user_info_fetcher: UserInfoFetcher | None = None
    env_var_fetcher: EnvVarFetcher | None = None
    connection_tracker: ConnectionTracker | None = None
    # Longest a client may take from TCP connect to finished authentication.
    login_timeout: float = 30.0
    # Forwarding kinds that are switched off; everything is dialled inside the sandbox.
    disabled_forwarding: frozenset[ForwardingKind] = frozenset()
    # ssh -A: the client's agent, reached from a socket inside the sandbox (sshd's default).
    agent_forwarding: bool = True
    # The sandbox's sftp-server; None searches the usual OpenSSH locations.
    sftp_server_path: str | None = None
    # Longest an ensure may take before the client is refused.
    ensure_timeout: float = 60.0
    # Run as root when the UserInfoFetcher fails, as the original did (logged each time).
    user_fallback_root: bool = False
    # Client env variables accepted (shell-style patterns, like sshd's AcceptEnv); None: all.
    accept_env: tuple[str, ...] | None = None
    # Variables every process gets, over the client's, like sshd's SetEnv.
    set_env: Mapping[str, str] = field(default_factory=dict)
    # Let several processes listen on the same port (SO_REUSEPORT), as `serve --workers` does.
    reuse_port: bool = False
    # "none" (the username alone, loopback only), "publickey", "token" or "publickey,token";
    # None picks "none" on loopback and "publickey" on any other address.
    auth: str | None = None
    # How tokens are checked (--auth token): a verifier (e.g. an HTTP hook), or else HMAC
    # tokens signed with the shared key in this file (`sandbox-ssh token` mints them).
    token_verifier: TokenVerifier | None = None
    token_key_file: Path | None = None
    # Close a connection this long after it authenticated (0: never). A token or certificate
    # that expires meanwhile does not close it, as under sshd.
    max_connection_age: float = 0.0
    # Allow "none" on a non-loopback address (warned about at start-up).
    insecure_allow_no_auth: bool = False
    admin_keys_path: Path | None = None  # authorized_keys valid for every session
    authorized_keys_dir: Path | None = None  # DIR/<session-id>
    trusted_user_ca_keys_path: Path | None = None  # CA keys; a cert names the session
    authorized_keys_fetcher: Callable[[str], Awaitable[str]] | None = None  # e.g. HTTP
    session_id_pattern: str = DEFAULT_SESSION_ID_PATTERN
    max_sessions: int = 10  # session channels per connection, like sshd's MaxSessions
    max_startups: int = 100  # connections that have not finished authenticating
    max_connections_per_session: int = 100
    # Forwarded connections (-L/-D/-W/-R, socket and agent forwards) open at once per session
    # ID: each holds descriptors, and a sandbox can dial its own -R listener at will.
    max_forwarded_per_session: int = DEFAULT_FORWARDED_PER_SESSION
    # While another tenant is interactive, the most of the event loop's time one tenant's
    # output may take: a sandbox flooding many clients cannot stall others' handshakes.
    tenant_loop_share: float = DEFAULT_TENANT_LOOP_SHARE
    # Per-tenant quotas (a UserInfo's own quotas replace these for its tenant); they hold
    # across `serve --workers`, not across replicas.
    quotas: Quotas = field(default_factory=Quotas)
    # Asked once a connection authenticated; it may refuse (e.g. by the platform's own count
    # across replicas). The HTTP track hook is one with `serve --track-refuses`.
    connection_admitter: ConnectionAdmitter | None = None
    # Process starts run at once at most; more wait, served round-robin over sandboxes
    # and connections. None: a few per CPU.
    max_concurrent_starts: int | None = None
    # Of those, how many one sandbox may hold at once (None: half of them), and how long
    # one start may hold its slot: a hostile sandbox can make its starts hang.
    max_concurrent_starts_per_sandbox: int | None = None
    start_timeout: float = 30.0
    client_alive_interval: float = 0.0  # seconds; 0 = off
    client_alive_count_max: int = 3
    # Per source address: new connections per minute (bursts allowed), and rejected keys
    # that ban the address for ban_seconds. 0 switches either off.
    connections_per_minute: int = 3000
    ban_after_failures: int = 20
    ban_seconds: float = 600.0
    # Algorithms offered, in order of preference (modern ones only by default).
    kex_algorithms: tuple[str, ...] = algorithms.KEX_ALGS
    ciphers: tuple[str, ...] = algorithms.ENCRYPTION_ALGS
    macs: tuple[str, ...] = algorithms.MAC_ALGS
    host_key_algorithms: tuple[str, ...] = algorithms.SIGNATURE_ALGS
    compression: tuple[str, ...] = algorithms.COMPRESSION_ALGS
    # Where audit events go (e.g. sandbox_ssh.audit.AuditLog); None: nowhere.
    audit_sink: AuditSink | None = None
    server_version: str = "sandbox-ssh"
    # Where sessions are recorded as asciicast v2 files (PTY sessions; with record_exec,
    # every shell and exec too); None: no recording. Input only with record_input.
    record_dir: Path | None = None
    record_exec: bool = False
    record_input: bool = False
    record_max_bytes: int = 100 * 1024 * 1024
    # HOST:PORT of the HTTP endpoint with /metrics (Prometheus), /healthz and /readyz; None: off.
    metrics_listen: str | None = None
    # Server.drain(): how long live connections may go on once the listener is closed.
    drain_timeout: float = 3600.0


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


def format_duration(seconds: float) -> str:
    """``3600`` as ``1h``, ``5400`` as ``1h30m``, ``90`` as ``1m30s``, ``0.5`` as ``0.5s``."""
    if seconds != int(seconds) or seconds <= 0:
        return f"{seconds:g}s"
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    parts = [
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes else "",
        f"{secs}s" if secs else "",
    ]
    return "".join(parts)


_SIZE = re.compile(r"(\d+)\s*([kmgt]?)(?:i?b)?")
_BYTES_PER_UNIT = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """Bytes in ``1048576``, ``512K``, ``100M``, ``100MiB`` or ``2G`` (binary units)."""
    match = _SIZE.fullmatch(text.strip().lower())
    if not match:
        raise ValueError(f"size {text!r} is not like 4096, 512K, 100M or 2G")
    return int(match.group(1)) * _BYTES_PER_UNIT[match.group(2)]


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


def is_loopback(address: str) -> bool:
    host, _ = parse_address(address)
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ConfigError(Exception):
    """The configuration is unsafe or inconsistent; the server refuses to start."""


AUTH_MODES = ("none", "publickey", "token", "publickey,token")


def auth_methods(mode: str) -> frozenset[str]:
    return frozenset(mode.split(","))


def auth_mode(config: Config) -> str:
    """The authentication mode, refusing no-auth beyond loopback unless explicitly allowed."""
    mode = config.auth or ("none" if is_loopback(config.address) else "publickey")
    mode = ",".join(sorted(set(mode.replace(" ", "").split(","))))
    if mode not in AUTH_MODES:
        raise ConfigError(f"unknown auth mode {mode!r}: use {', '.join(AUTH_MODES)}")
    if "token" in mode and config.token_verifier is None and config.token_key_file is None:
        raise ConfigError("--auth token needs --token-key-file or --token-url")
    if mode == "none" and not is_loopback(config.address) and not config.insecure_allow_no_auth:
        raise ConfigError(
            f"refusing to listen on {config.address} without authentication: anyone who can "
            "reach it could use any sandbox. Use --auth publickey, or --insecure-allow-no-auth"
        )
    return mode


def check_algorithms(config: Config) -> None:
    """Raise ConfigError for an algorithm name asyncssh does not implement."""
    for kind, names in (
        ("kex", config.kex_algorithms),
        ("cipher", config.ciphers),
        ("mac", config.macs),
        ("host key", config.host_key_algorithms),
        ("compression", config.compression),
    ):
        try:
            algorithms.check_algorithms(kind, tuple(names))
        except ValueError as error:
            raise ConfigError(str(error)) from None


def check_set_env(config: Config) -> None:
    """Raise ConfigError for a set_env entry sshd's SetEnv would refuse, or one the sandbox's
    passwd entry decides."""
    try:
        parse_set_env([f"{name}={value}" for name, value in config.set_env.items()])
    except ValueError as error:
        raise ConfigError(str(error)) from None


def recording_policy(config: Config) -> RecordingPolicy | None:
    if config.record_dir is None:
        return None
    return RecordingPolicy(
        Path(config.record_dir),
        exec_too=config.record_exec,
        record_input=config.record_input,
        max_bytes=config.record_max_bytes,
    )
