"""One SSH connection: the username picks the sandbox, before any channel is served."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import asyncssh

from .._session.channel import SessionChannel, SubsystemConfig
from .._session.environment import Endpoints
from .._session.forwarding import Forwarding, ForwardingPolicy
from .._session.resolve import ConnectionRejected, Hooks, ResolvedConnection, resolve_connection
from ..hooks import ConnectionTracker, Release
from . import forwarding
from .session import SSHChannelAdapter

log = logging.getLogger("sandbox_ssh.server")

Spawn = Callable[[Coroutine[Any, Any, None]], None]


@dataclass
class GatewayState:
    """What every connection of one server shares."""

    hooks: Hooks
    tracker: ConnectionTracker | None
    spawn: Spawn
    forwarding_policy: ForwardingPolicy = field(default_factory=ForwardingPolicy)
    subsystems: SubsystemConfig = field(default_factory=SubsystemConfig)
    accept_env: tuple[str, ...] | None = None
    connections: set[GatewayConnection] = field(default_factory=set)
    stopping: bool = False


def _address(info: Any) -> tuple[str, int]:
    if isinstance(info, tuple) and len(info) >= 2:
        return str(info[0]), int(info[1])
    return "unknown", 0


async def _refused() -> bool:
    # Global requests have no reason field; a plain failure is what sshd sends too.
    return False


class GatewayConnection(asyncssh.SSHServer):
    def __init__(self, state: GatewayState) -> None:
        self._state = state
        self._conn: asyncssh.SSHServerConnection | None = None
        self._resolved: ResolvedConnection | None = None
        self._release: Release | None = None
        self._opened_at = time.monotonic()
        self._peer = ("unknown", 0)
        self._local = ("unknown", 0)
        self._outcome: str | None = None
        self._channels: set[SessionChannel] = set()
        self._forwarding: Forwarding | None = None
        self._subsystem_cache: dict[str, str] = {}

    @property
    def session_id(self) -> str | None:
        return self._resolved.session_id if self._resolved else None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        self._peer = _address(conn.get_extra_info("peername"))
        self._local = _address(conn.get_extra_info("sockname"))
        self._state.connections.add(self)

    async def begin_auth(self, username: str) -> bool:
        try:
            self._resolved = await resolve_connection(
                self._state.hooks, username, notify=self._send_banner
            )
        except ConnectionRejected as rejection:
            self._outcome = f"rejected: {rejection}"
            raise asyncssh.DisconnectError(asyncssh.DISC_BY_APPLICATION, str(rejection)) from None
        self._forwarding = Forwarding(
            self._state.hooks.provider, self._resolved, self._state.forwarding_policy
        )
        # The username is the session ID; no further authentication in this mode.
        return False

    def _send_banner(self, message: str) -> None:
        if self._conn is not None:
            self._conn.send_auth_banner(message + "\n")

    def auth_completed(self) -> None:
        resolved = self._resolved
        assert resolved is not None
        log.info(
            "connection opened: session=%s remote=%s:%d sandbox=%s user=%s",
            resolved.session_id,
            *self._peer,
            resolved.sandbox.id[:12],
            resolved.user.username,
        )
        if self._state.tracker is not None:
            try:
                self._release = self._state.tracker.track(resolved.session_id)
            except Exception:
                log.exception("connection tracker failed for session %s", resolved.session_id)

    def session_requested(self) -> SSHChannelAdapter | bool:
        resolved = self._resolved
        if resolved is None or self._state.stopping:
            return False
        endpoints = Endpoints(self._peer[0], self._peer[1], self._local[0], self._local[1])

        def make_session(adapter: SSHChannelAdapter) -> SessionChannel:
            channel = SessionChannel(
                self._state.hooks.provider,
                resolved,
                endpoints,
                adapter,
                self._state.spawn,
                subsystems=self._state.subsystems,
                subsystem_cache=self._subsystem_cache,
                accept_env=self._state.accept_env,
            )
            self._channels.add(channel)
            return channel

        return SSHChannelAdapter(make_session)

    # Forwarding: always inside the sandbox; see _ssh/forwarding.py.

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> Awaitable[asyncssh.SSHTCPSession[bytes]]:
        return forwarding.open_direct_tcp(self._require_forwarding(), dest_host, dest_port)

    def unix_connection_requested(
        self, dest_path: str
    ) -> Awaitable[asyncssh.SSHUNIXSession[bytes]]:
        return forwarding.open_direct_unix(self._require_forwarding(), dest_path)

    def server_requested(
        self, listen_host: str, listen_port: int
    ) -> Awaitable[asyncssh.SSHListener | bool]:
        if self._conn is None or self._forwarding is None or self._state.stopping:
            return _refused()
        return forwarding.listen_tcp(self._conn, self._forwarding, listen_host, listen_port)

    def unix_server_requested(self, listen_path: str) -> Awaitable[asyncssh.SSHListener | bool]:
        if self._conn is None or self._forwarding is None or self._state.stopping:
            return _refused()
        return forwarding.listen_unix(self._conn, self._forwarding, listen_path)

    def _require_forwarding(self) -> Forwarding:
        if self._forwarding is None or self._state.stopping:
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, "the gateway is shutting down"
            )
        return self._forwarding

    def connection_lost(self, exc: Exception | None) -> None:
        self._state.connections.discard(self)
        for channel in self._channels:
            channel.close()  # idempotent; asyncssh also closes each channel
        self._channels.clear()
        if self._release is not None:
            release, self._release = self._release, None
            try:
                release()
            except Exception:
                log.exception("connection tracker release failed")
        outcome = self._outcome or self._describe_end(exc)
        log.info(
            "connection closed: session=%s remote=%s:%d duration=%.3fs end=%s",
            self.session_id or "-",
            *self._peer,
            time.monotonic() - self._opened_at,
            outcome,
        )

    def _describe_end(self, exc: Exception | None) -> str:
        if self._state.stopping:
            return "server stopped"
        if exc is None:
            return "closed"
        if isinstance(exc, asyncssh.DisconnectError):
            return f"disconnected: {exc.reason or type(exc).__name__}"
        if isinstance(exc, (ConnectionError, asyncio.IncompleteReadError)):
            return "connection lost"
        return f"error: {type(exc).__name__}"

    def close(self, reason: str) -> None:
        if self._conn is not None:
            self._conn.disconnect(asyncssh.DISC_BY_APPLICATION, reason)

    async def wait_closed(self) -> None:
        if self._conn is not None:
            await self._conn.wait_closed()
