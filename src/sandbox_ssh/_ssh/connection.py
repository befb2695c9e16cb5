"""One SSH connection: the username picks the sandbox, before any channel is served."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncssh

from .._logs import ConnectionLog, fields
from .._metrics import Metrics
from .._session.agent import AgentForwarding
from .._session.audit import AuditSink, ConnectionAudit, NoAudit
from .._session.channel import SessionChannel, SubsystemConfig
from .._session.environment import Endpoints, EnvironmentPolicy
from .._session.forwarding import Forwarding, ForwardingPolicy
from .._session.keys import KeySources, collect_authorized_keys
from .._session.loop_share import LoopShares, TenantLoopShare
from .._session.quotas import QuotaExceeded, QuotaTable, TenantQuota
from .._session.recording import RecordingPolicy
from .._session.resolve import (
    ConnectionRejected,
    Hooks,
    ResolvedConnection,
    check_session_id,
    one_line,
    resolve_connection,
)
from .._session.shares import DEFAULT_FORWARDED_PER_SESSION, TenantShares
from .._session.starts import StartScheduler
from .._session.tokens import split_username
from ..config import format_duration
from ..hooks import (
    ConnectionAdmitter,
    ConnectionTracker,
    Quotas,
    Release,
    TokenRefused,
    TokenVerifier,
)
from ..tracking import InMemoryConnectionTracker
from . import forwarding
from .agent import serve_agent
from .algorithms import SIGNATURE_ALGS
from .auth import accept_only_signature_algorithms, limit_auth_attempts, parse_authorized_keys
from .internals import (
    answered_in_order,
    coalesce_writes,
    explain_refused_identification,
    follow_rfc_kex_guess,
    skip_cbc_ignore_padding,
)
from .limits import SourceGuard
from .session import SSHChannelAdapter
from .traffic import TrafficCounter

log = logging.getLogger("sandbox_ssh.server")

Spawn = Callable[[Coroutine[Any, Any, None]], None]
_EARLY_REFUSAL_DELAY = 0.1


@dataclass
class GatewayState:
    """What every connection of one server shares."""

    hooks: Hooks
    tracker: ConnectionTracker | None
    spawn: Spawn
    forwarding_policy: ForwardingPolicy = field(default_factory=ForwardingPolicy)
    subsystems: SubsystemConfig = field(default_factory=SubsystemConfig)
    environment: EnvironmentPolicy = field(default_factory=EnvironmentPolicy)
    auth_mode: str = "none"
    # "none", or any of "publickey" and "token".
    auth_methods: frozenset[str] = frozenset({"none"})
    # User keys and signatures are accepted only with these (sshd's PubkeyAcceptedAlgorithms).
    signature_algorithms: frozenset[str] = frozenset(SIGNATURE_ALGS)
    token_verifier: TokenVerifier | None = None
    admitter: ConnectionAdmitter | None = None
    max_connection_age: float = 0.0  # seconds; 0: no bound
    key_sources: KeySources = field(default_factory=KeySources)
    max_sessions: int = 10
    max_startups: int = 100
    max_connections_per_session: int = 100
    connections: set[GatewayConnection] = field(default_factory=set)
    unauthenticated: int = 0
    live: InMemoryConnectionTracker = field(default_factory=InMemoryConnectionTracker)
    audit: AuditSink = field(default_factory=NoAudit)
    sources: SourceGuard = field(default_factory=SourceGuard)
    starts: StartScheduler = field(default_factory=StartScheduler)
    metrics: Metrics = field(default_factory=Metrics)
    agent_forwarding: bool = True
    recording: RecordingPolicy | None = None
    # Called whenever a connection ends (the server trims the heap after bursts).
    connection_ended: Callable[[], None] = lambda: None
    forwarded_shares: TenantShares = field(
        default_factory=lambda: TenantShares(DEFAULT_FORWARDED_PER_SESSION)
    )
    loop_shares: LoopShares = field(default_factory=LoopShares)
    quotas: Quotas = field(default_factory=Quotas)
    quota_table: QuotaTable | None = None  # made by the server before workers fork
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
        # Open session channels; their number is what --max-sessions bounds.
        self._sessions: set[SSHChannelAdapter] = set()
        self._forwarding: Forwarding | None = None
        self._agent: AgentForwarding | None = None
        self._stop_agent_server: Callable[[], None] | None = None
        self._subsystem_cache: dict[str, str] = {}
        self._authenticating = False
        self._live_release: Release | None = None
        self._audit = ConnectionAudit(state.audit, uuid.uuid4().hex[:16])
        # Every log line of this connection carries its ID and what is known of it.
        self._log = ConnectionLog(log, self._audit.connection_id, self._audit.context)
        self._traffic: TrafficCounter | None = None
        self._outcome_class = ""
        self._authenticated_at: float | None = None
        self._key_fingerprint: str | None = None
        # Set when admission refused the connection; no authentication may follow.
        self._refusal: str | None = None
        self._auth_begun = False
        self._loop_share: TenantLoopShare | None = None
        self._session_name = ""  # the session ID asked for, before it is resolved
        self._auth_method = "publickey"
        self._age_limit: asyncio.TimerHandle | None = None
        self._quota: TenantQuota | None = None
        self._admission: Release | None = None
        self._quota_release: Release | None = None
        self._traffic_check: asyncio.TimerHandle | None = None
        self._traffic_counted = (0, 0)
        # Channel quota held by this connection's sessions, given back however they end.
        self._quota_channels: set[Release] = set()

    @property
    def session_id(self) -> str | None:
        return self._resolved.session_id if self._resolved else None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        skip_cbc_ignore_padding(conn)
        coalesce_writes(conn)
        follow_rfc_kex_guess(conn)
        explain_refused_identification(conn)
        self._global_requests_answered = answered_in_order(conn)
        self._peer = _address(conn.get_extra_info("peername"))
        self._local = _address(conn.get_extra_info("sockname"))
        self._audit.context["remote"] = f"{self._peer[0]}:{self._peer[1]}"
        self._traffic = TrafficCounter(conn.get_extra_info("socket"))
        self._state.connections.add(self)
        self._state.metrics.connections_open.inc()
        refusal = self._state.sources.admit(self._peer[0])
        if refusal is not None:
            limit = "ban" if refusal.startswith("banned") else "rate"
            self._log.warning(
                "refusing %s:%d: %s",
                *self._peer,
                refusal,
                extra=fields("connection.refused", reason=refusal, limit=limit),
            )
            self._refuse_early(conn, refusal, limit)
            return
        if self._state.unauthenticated >= self._state.max_startups:
            # Like sshd's MaxStartups: shed load before spending a handshake on it.
            self._log.warning(
                "refusing %s:%d: %d connections are still authenticating",
                *self._peer,
                self._state.unauthenticated,
                extra=fields("connection.refused", limit="max_startups"),
            )
            reason = "too many connections are authenticating; try again later"
            self._refuse_early(conn, reason, "max_startups")
            return
        self._state.unauthenticated += 1
        self._state.loop_shares.handshake_started()
        self._authenticating = True
        if "publickey" in self._state.auth_methods:
            accept_only_signature_algorithms(
                conn, self._state.signature_algorithms, self._signature_refused
            )
            limit_auth_attempts(conn, self._auth_failed, self._auth_succeeded)

    def _refuse_early(self, conn: asyncssh.SSHServerConnection, reason: str, limit: str) -> None:
        """Drop a connection before authentication, with a reason the client prints.

        Sending it at once races the client's first packets: closing with them unread
        resets the connection before OpenSSH reads the message. A short delay lets them
        arrive first. A fast client may finish the key exchange within the delay, so
        begin_auth refuses too: the delay only affects how the reason is delivered.
        """
        self._refusal = reason
        self._outcome = f"refused: {reason}"
        self._limited(limit)
        self._audit.record("connection.refused", reason=reason)
        asyncio.get_running_loop().call_later(
            _EARLY_REFUSAL_DELAY, conn.disconnect, asyncssh.DISC_TOO_MANY_CONNECTIONS, reason
        )

    def _limited(self, limit: str) -> None:
        self._outcome_class = "limited"
        self._state.metrics.refusals.labels(limit).inc()

    def _signature_refused(self, reason: str) -> None:
        # One line, as sshd's "signature algorithm ssh-rsa not in PubkeyAcceptedAlgorithms";
        # the attempt then counts as a rejected key.
        self._log.info(
            'session "%s": publickey from %s:%d refused: %s (see --host-key-algorithms)',
            self._session_name,
            *self._peer,
            reason,
            extra=fields("auth", method="publickey", outcome="refused", reason=reason),
        )

    def _auth_failed(self, fingerprint: str) -> None:
        self._log.info(
            "publickey rejected from %s:%d (%s)",
            *self._peer,
            fingerprint,
            extra=fields("auth", method="publickey", outcome="failure", key=fingerprint),
        )
        self._state.metrics.auth.labels("publickey", "failure").inc()
        self._audit.record("auth", method="publickey", result="failure", key=fingerprint)
        if self._state.sources.auth_failed(self._peer[0]):
            self._log.warning(
                "banning %s after repeated authentication failures",
                self._peer[0],
                extra=fields("ban", address=self._peer[0]),
            )
            self._audit.record("ban", address=self._peer[0])

    async def _auth_succeeded(self, fingerprint: str) -> None:
        self._key_fingerprint = fingerprint
        await self._admit(self._session_name)

    async def _admit(self, session_id: str) -> None:
        """Ask the admitter (e.g. the track hook, for quotas kept by the platform) once."""
        admitter = self._state.admitter
        if admitter is None or self._admission is not None:
            return
        try:
            self._admission = await admitter.admit(session_id)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            reason = f'session "{session_id}": {one_line(error)}'
            self._limited("admission")
            self._outcome = f"refused: {reason}"
            self._audit.record("connection.refused", reason=reason)
            raise asyncssh.DisconnectError(asyncssh.DISC_BY_APPLICATION, reason) from None

    def _done_authenticating(self) -> None:
        if self._authenticating:
            self._authenticating = False
            self._state.unauthenticated -= 1
            self._state.loop_shares.handshake_ended()

    async def begin_auth(self, username: str) -> bool:
        self._auth_begun = True
        if self._refusal is not None:
            raise asyncssh.DisconnectError(asyncssh.DISC_TOO_MANY_CONNECTIONS, self._refusal)
        methods = self._state.auth_methods
        # SESSION#TOKEN: for clients that cannot send a password without a prompt. Nothing
        # below this line sees the token, least of all a log.
        session_id, token = split_username(username) if "token" in methods else (username, None)
        self._session_name = session_id
        if token is not None:
            await self._check_token(session_id, token, "username")
            await self._resolve(session_id)
            await self._admit(session_id)
            return False
        if "publickey" not in methods and "none" not in methods:
            return True  # token only: nothing is resolved (no ensure) before a token verifies
        await self._resolve(session_id)
        if "none" in methods:
            await self._admit(session_id)
            return False  # the username is the session ID, as in the original
        try:
            sandbox = self._resolved.sandbox if self._resolved else None
            assert sandbox is not None
            text = await self._state.metrics.timed(
                self._state.metrics.hook_latency,
                "authorized_keys",
                lambda: collect_authorized_keys(sandbox, self._state.key_sources),
            )
        except Exception as error:
            self._outcome = "rejected: authorized keys unavailable"
            self._outcome_class = "refused"
            raise asyncssh.DisconnectError(
                asyncssh.DISC_BY_APPLICATION,
                f'session "{session_id}": cannot read its authorized keys: {one_line(error)}',
            ) from None
        keys = parse_authorized_keys(text, session_id)
        if keys is not None and self._conn is not None:
            self._conn.set_authorized_keys(keys)
        return True

    async def _resolve(self, session_id: str) -> None:
        """Find (and ensure) the session's sandbox, and what the connection needs of it."""
        try:
            self._resolved = await resolve_connection(
                self._state.hooks, session_id, notify=self._send_banner
            )
        except ConnectionRejected as rejection:
            self._outcome = f"rejected: {rejection}"
            self._outcome_class = "refused"
            self._audit.record(
                "connection.rejected", username=session_id[:200], reason=str(rejection)
            )
            raise asyncssh.DisconnectError(asyncssh.DISC_BY_APPLICATION, str(rejection)) from None
        live = self._state.live.live_connections(session_id)
        if live >= self._state.max_connections_per_session:
            self._outcome = "rejected: too many connections to this session"
            self._limited("per_session")
            raise asyncssh.DisconnectError(
                asyncssh.DISC_TOO_MANY_CONNECTIONS,
                f'session "{session_id}": too many connections ({live}) to this session',
            )
        self._audit.context["session"] = session_id
        self._forwarding = Forwarding(
            self._state.hooks.provider,
            self._resolved,
            self._state.forwarding_policy,
            self._audit,
            metrics=self._state.metrics,
            log=self._log,
            shares=self._state.forwarded_shares,
        )
        self._agent = AgentForwarding(
            self._state.hooks.provider, self._resolved, self._audit, self._log
        )
        if self._conn is not None:
            self._stop_agent_server = serve_agent(
                self._conn, self._agent, self._state.agent_forwarding, self._log, self._forwarding
            )

    async def _check_token(self, session_id: str, token: str, via: str) -> None:
        """Let the token in, or disconnect with one line; the token itself goes nowhere."""
        verifier = self._state.token_verifier
        try:
            check_session_id(session_id, self._state.hooks.session_id_pattern)
            if verifier is None:
                raise TokenRefused("token authentication is not configured")
            await verifier.verify_token(session_id, token)
        except asyncio.CancelledError:
            raise
        except (TokenRefused, ConnectionRejected) as refusal:
            reason = str(refusal)
        except Exception as error:
            self._state.metrics.errors.labels("hook:token", type(error).__name__).inc()
            reason = f'session "{session_id}": the token could not be checked: {one_line(error)}'
        else:
            self._auth_method = "token"
            return
        self._log.info(
            "token refused from %s:%d (%s): %s",
            *self._peer,
            via,
            reason,
            extra=fields("auth", method="token", outcome="failure"),
        )
        self._state.metrics.auth.labels("token", "failure").inc()
        self._audit.record("auth", method="token", result="failure", reason=reason)
        self._outcome = f"rejected: {reason}"
        self._outcome_class = "refused"
        if self._state.sources.auth_failed(self._peer[0]):
            self._audit.record("ban", address=self._peer[0])
        raise asyncssh.DisconnectError(asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE, reason)

    def password_auth_supported(self) -> bool:
        return "token" in self._state.auth_methods

    async def validate_password(self, username: str, password: str) -> bool:
        return await self._token_given(password, "password")

    def kbdint_auth_supported(self) -> bool:
        return "token" in self._state.auth_methods

    def get_kbdint_challenge(
        self, username: str, lang: str, submethods: str
    ) -> tuple[str, str, str, list[tuple[str, bool]]]:
        return "", f'The access token for session "{self._session_name}"', "", [("Token: ", False)]

    async def validate_kbdint_response(self, username: str, responses: Sequence[str]) -> bool:
        if len(responses) != 1:
            return False
        return await self._token_given(responses[0], "keyboard-interactive")

    async def _token_given(self, token: str, via: str) -> bool:
        session_id = self._session_name
        await self._check_token(session_id, token, via)
        if self._resolved is None:
            await self._resolve(session_id)
        await self._admit(session_id)
        return True

    def public_key_auth_supported(self) -> bool:
        if not self._auth_begun:
            # asyncssh calls begin_auth only for a username other than its initial "",
            # so an empty username (ssh -l '') comes here unresolved.
            raise asyncssh.DisconnectError(
                asyncssh.DISC_ILLEGAL_USER_NAME,
                "the username is the session ID, and it is empty",
            )
        return "publickey" in self._state.auth_methods

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return False  # only keys from the authorized sources, matched by asyncssh

    def _send_banner(self, message: str) -> None:
        if self._conn is not None:
            self._conn.send_auth_banner(message + "\n")

    def auth_completed(self) -> None:
        resolved = self._resolved
        assert resolved is not None
        self._done_authenticating()
        if not self._admit_to_quotas(resolved):
            return
        methods = self._state.auth_methods
        method = "none" if "none" in methods else self._auth_method
        self._audit.record("auth", method=method, result="success", key=self._key_fingerprint)
        self._state.metrics.auth.labels(method, "success").inc()
        self._authenticated_at = time.monotonic()
        self._audit.context["sandbox"] = resolved.sandbox.id[:12]
        self._audit.context["user"] = resolved.user.username
        client_version = self._conn.get_extra_info("client_version") if self._conn else None
        self._audit.record(
            "connection.open",
            client_version=client_version,
            sandbox=resolved.sandbox.id[:12],
            user=resolved.user.username,
        )
        self._live_release = self._state.live.track(resolved.session_id)
        age = self._state.max_connection_age
        if age > 0:
            self._age_limit = asyncio.get_running_loop().call_later(
                age, self._too_old, format_duration(age)
            )
        self._loop_share = self._state.loop_shares.join(resolved.session_id)
        if self._forwarding is not None:
            self._forwarding.loop_share = self._loop_share
        self._log.info(
            "connection opened: session=%s remote=%s:%d sandbox=%s user=%s",
            resolved.session_id,
            *self._peer,
            resolved.sandbox.id[:12],
            resolved.user.username,
            extra=fields("connection.open"),
        )
        if self._state.tracker is not None:
            started = time.monotonic()
            try:
                self._release = self._state.tracker.track(resolved.session_id)
            except Exception as error:
                self._state.metrics.errors.labels("hook:track", type(error).__name__).inc()
                self._log.exception(
                    "connection tracker failed for session %s",
                    resolved.session_id,
                    extra=fields("hook.error", hook="track"),
                )
            finally:
                self._state.metrics.hook_latency.labels("track").observe(time.monotonic() - started)

    def session_requested(self) -> SSHChannelAdapter | bool:
        resolved = self._resolved
        if resolved is None or self._state.stopping:
            return False
        endpoints = Endpoints(self._peer[0], self._peer[1], self._local[0], self._local[1])

        if len(self._sessions) >= self._state.max_sessions:
            self._state.metrics.refusals.labels("max_sessions").inc()
            self._log.warning(
                "session %s from %s:%d: refusing channel beyond --max-sessions %d",
                resolved.session_id,
                *self._peer,
                self._state.max_sessions,
                extra=fields("channel.refused", limit="max_sessions"),
            )
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_RESOURCE_SHORTAGE,
                f"too many sessions on this connection (at most {self._state.max_sessions})",
            )

        loop_share = self._loop_share
        if loop_share is not None:
            loop_share.touch()

        def make_session(adapter: SSHChannelAdapter) -> SessionChannel:
            return SessionChannel(
                self._state.hooks.provider,
                resolved,
                endpoints,
                adapter,
                self._state.spawn,
                subsystems=self._state.subsystems,
                subsystem_cache=self._subsystem_cache,
                environment=self._state.environment,
                audit=self._audit,
                starts=self._state.starts,
                metrics=self._state.metrics,
                log=self._log,
                agent=self._agent,
                recording=self._state.recording,
                forwarding=self._forwarding,
                loop_share=loop_share,
                quota=self._quota,
            )

        channel_released: Release = lambda: None  # noqa: E731
        if self._quota is not None:
            try:
                channel_released = self._quota.channel()
            except QuotaExceeded as error:
                raise asyncssh.ChannelOpenError(
                    asyncssh.OPEN_RESOURCE_SHORTAGE, str(error)
                ) from None
            self._quota_channels.add(channel_released)

        def closed(adapter: SSHChannelAdapter) -> None:
            self._sessions.discard(adapter)
            self._quota_channels.discard(channel_released)
            channel_released()

        adapter = SSHChannelAdapter(make_session, on_close=closed)
        self._sessions.add(adapter)
        return adapter

    # Forwarding: always inside the sandbox; see _ssh/forwarding.py.

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> Awaitable[asyncssh.SSHTCPSession[bytes]]:
        return forwarding.open_direct_tcp(
            self._require_forwarding(), dest_host, dest_port, self._global_requests_answered()
        )

    def unix_connection_requested(
        self, dest_path: str
    ) -> Awaitable[asyncssh.SSHUNIXSession[bytes]]:
        return forwarding.open_direct_unix(
            self._require_forwarding(), dest_path, self._global_requests_answered()
        )

    def server_requested(
        self, listen_host: str, listen_port: int
    ) -> Awaitable[asyncssh.SSHListener | bool]:
        active = self._active_forwarding()
        if active is None or self._conn is None:
            return _refused()
        return forwarding.listen_tcp(self._conn, active, listen_host, listen_port)

    def unix_server_requested(self, listen_path: str) -> Awaitable[asyncssh.SSHListener | bool]:
        active = self._active_forwarding()
        if active is None or self._conn is None:
            return _refused()
        return forwarding.listen_unix(self._conn, active, listen_path)

    def _active_forwarding(self) -> Forwarding | None:
        """The connection's forwarding, unless it is not resolved yet or the gateway stops."""
        return None if self._state.stopping else self._forwarding

    def _require_forwarding(self) -> Forwarding:
        active = self._active_forwarding()
        if active is None:
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, "the gateway is shutting down"
            )
        return active

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self._state.connections:
            self._state.metrics.connections_open.dec()
        self._state.connections.discard(self)
        self._state.connection_ended()
        self._done_authenticating()
        if self._live_release is not None:
            self._live_release()
        if self._loop_share is not None:
            loop_share, self._loop_share = self._loop_share, None
            loop_share.leave()
        if self._age_limit is not None:
            self._age_limit.cancel()
        if self._traffic_check is not None:
            self._traffic_check.cancel()
            with contextlib.suppress(QuotaExceeded):
                self._count_traffic()  # the last second's bytes count too
        for release in list(self._quota_channels):
            release()
        if self._quota_release is not None:
            self._quota_release()
        if self._admission is not None:
            admission, self._admission = self._admission, None
            try:
                admission()
            except Exception:
                self._log.exception("admission release failed", extra=fields("hook.error"))
        for adapter in list(self._sessions):
            adapter.connection_lost(None)  # idempotent; asyncssh also closes each channel
        if self._stop_agent_server is not None:
            self._stop_agent_server()
        if self._agent is not None:
            self._agent.close()
        if self._release is not None:
            release, self._release = self._release, None
            try:
                release()
            except Exception:
                self._log.exception(
                    "connection tracker release failed", extra=fields("hook.error", hook="track")
                )
        outcome = self._outcome or self._describe_end(exc)
        duration = time.monotonic() - self._opened_at
        sent, received = self._traffic.finish() if self._traffic else (None, None)
        metrics = self._state.metrics
        metrics.connections.labels(self._outcome_class or self._end_class(exc)).inc()
        if sent:
            metrics.bytes.labels("out").inc(sent)
        if received:
            metrics.bytes.labels("in").inc(received)
        if self._authenticated_at is not None:
            metrics.session_duration.observe(time.monotonic() - self._authenticated_at)
        self._audit.record(
            "connection.close",
            duration=round(duration, 3),
            bytes_in=received,
            bytes_out=sent,
            end=outcome,
        )
        self._log.info(
            "connection closed: session=%s remote=%s:%d duration=%.3fs end=%s",
            self.session_id or "-",
            *self._peer,
            duration,
            outcome,
            extra=fields(
                "connection.close",
                duration=round(duration, 3),
                outcome=outcome,
                bytes_in=received,
                bytes_out=sent,
            ),
        )

    def _end_class(self, exc: Exception | None) -> str:
        if self._state.stopping:
            return "server_stopped"
        if exc is None or isinstance(exc, asyncssh.DisconnectError):
            return "closed"
        return "lost"

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

    def _admit_to_quotas(self, resolved: ResolvedConnection) -> bool:
        """Count the connection against its tenant's quotas; False (and closed) when over."""
        table = self._state.quota_table
        quotas = self._state.quotas.over(resolved.user.quotas)
        if table is None or quotas == Quotas():
            return True
        tenant = resolved.user.tenant or resolved.session_id
        quota = TenantQuota(table, tenant, quotas, self._state.metrics)
        try:
            quota.check_traffic()
            self._quota_release = quota.connection()
        except QuotaExceeded as error:
            self._quota_refused(error)
            return False
        self._quota = quota
        if self._forwarding is not None:
            self._forwarding.quota = quota
        if quotas.bytes_in_per_hour is not None or quotas.bytes_out_per_hour is not None:
            self._check_traffic()
        return True

    def _check_traffic(self) -> None:
        """Count the connection's bytes once a second; close it once over its tenant's quota."""
        self._traffic_check = None
        try:
            self._count_traffic()
        except QuotaExceeded as error:
            self._quota_refused(error)
            return
        self._traffic_check = asyncio.get_running_loop().call_later(1.0, self._check_traffic)

    def _count_traffic(self) -> None:
        """Add the connection's bytes since the last count to its tenant's."""
        if self._quota is None or self._traffic is None:
            return
        sent, received = self._traffic.read()
        if sent is None or received is None:
            return
        before_sent, before_received = self._traffic_counted
        self._traffic_counted = (sent, received)
        self._quota.traffic(sent - before_sent, received - before_received)

    def _quota_refused(self, error: QuotaExceeded) -> None:
        self._outcome = f"closed: {error}"
        self._outcome_class = "limited"
        self._log.warning(
            "%s: %s", self.session_id, error, extra=fields("quota", quota=error.quota)
        )
        self.close(str(error))

    def _too_old(self, age: str) -> None:
        self._outcome = f"closed: the connection reached --max-connection-age {age}"
        self.close(f"the connection reached its maximum age ({age}); connect again")

    def close(self, reason: str) -> None:
        if self._conn is not None:
            self._conn.disconnect(asyncssh.DISC_BY_APPLICATION, reason)

    async def wait_closed(self) -> None:
        if self._conn is not None:
            await self._conn.wait_closed()
