"""The gateway server: listens, serves, stops cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
from collections.abc import Coroutine
from typing import Any

import asyncssh

from ._endpoint import Endpoint
from ._logs import release_held_warnings
from ._memory import HeapTrimmer
from ._metrics import Metrics
from ._session.audit import NoAudit
from ._session.ensure import EnsureCoordinator
from ._session.environment import EnvironmentPolicy
from ._session.forwarding import ForwardingKind
from ._session.keys import KeySources
from ._session.loop_share import LoopShares
from ._session.quotas import shared_quota_table
from ._session.resolve import Hooks
from ._session.shares import TenantShares
from ._session.starts import StartScheduler
from ._session.tokens import HmacTokenVerifier, load_token_key
from ._ssh.connection import GatewayConnection, GatewayState
from ._ssh.hostkey import load_host_keys
from ._ssh.internals import use_fast_chacha
from ._ssh.limits import SourceGuard
from .config import (
    Config,
    ConfigError,
    auth_methods,
    auth_mode,
    check_algorithms,
    check_set_env,
    format_address,
    forwarding_policy,
    is_loopback,
    parse_address,
    recording_policy,
    subsystem_config,
)
from .hooks import (
    AuthorizedKeysSource,
    HealthReporter,
    PreparedProvider,
    SandboxEnsurer,
    SandboxNetwork,
    TokenVerifier,
)

log = logging.getLogger("sandbox_ssh.server")

# asyncssh logs commands at INFO and env values at debug level; both can carry secrets.
logging.getLogger("asyncssh").setLevel(logging.WARNING)

_STOP_TIMEOUT = 10.0


class Server:
    """An SSH gateway serving the sandboxes that ``config.sandbox_provider`` finds."""

    def __init__(self, config: Config) -> None:
        self.config = config
        provider = config.sandbox_provider
        self.metrics = Metrics()
        self._hooks = Hooks(
            provider=config.sandbox_provider,
            ensurer=config.sandbox_ensurer,
            user_info_fetcher=config.user_info_fetcher,
            env_var_fetcher=config.env_var_fetcher,
            ensures=EnsureCoordinator(config.ensure_timeout),
            user_fallback_root=config.user_fallback_root,
            session_id_pattern=re.compile(config.session_id_pattern),
            metrics=self.metrics,
        )
        self._background: set[asyncio.Task[None]] = set()
        self._heap = HeapTrimmer()
        self._state = GatewayState(
            hooks=self._hooks,
            tracker=config.connection_tracker,
            spawn=self._spawn,
            forwarding_policy=forwarding_policy(config),
            subsystems=subsystem_config(config),
            environment=EnvironmentPolicy(config.accept_env, dict(config.set_env)),
            key_sources=KeySources(
                admin_keys=config.admin_keys_path,
                directory=config.authorized_keys_dir,
                provider=provider if isinstance(provider, AuthorizedKeysSource) else None,
                fetchers=(config.authorized_keys_fetcher,)
                if config.authorized_keys_fetcher
                else (),
                trusted_user_ca_keys=config.trusted_user_ca_keys_path,
            ),
            max_sessions=config.max_sessions,
            max_startups=config.max_startups,
            max_connections_per_session=config.max_connections_per_session,
            audit=config.audit_sink or NoAudit(),
            metrics=self.metrics,
            agent_forwarding=config.agent_forwarding,
            recording=recording_policy(config),
            forwarded_shares=TenantShares(config.max_forwarded_per_session),
            loop_shares=LoopShares(config.tenant_loop_share),
            quotas=config.quotas,
            admitter=config.connection_admitter,
            quota_table=shared_quota_table(),
            connection_ended=self._heap.soon,
            starts=StartScheduler(
                config.max_concurrent_starts,
                config.max_concurrent_starts_per_sandbox,
                config.start_timeout,
            ),
            sources=SourceGuard(
                connections_per_minute=config.connections_per_minute,
                ban_after_failures=config.ban_after_failures,
                ban_seconds=config.ban_seconds,
            ),
        )
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self._endpoint: Endpoint | None = None
        self.metrics_port: int | None = None  # the endpoint's bound port, once started
        self._stopped = asyncio.Event()
        self._draining = False
        # What `sandbox-ssh serve` prepared as root before this process gave root up: its
        # listening sockets and host keys (see adopt()).
        self._listen_sock: socket.socket | None = None
        self._metrics_sock: socket.socket | None = None
        self._host_keys: list[asyncssh.SSHKey] | None = None

    def adopt(
        self,
        listen_sock: socket.socket,
        host_keys: list[asyncssh.SSHKey],
        metrics_sock: socket.socket | None = None,
    ) -> None:
        """Serve on sockets already bound and with host keys already loaded, instead of
        binding and reading them at start(): the way a process that no longer may (an
        unprivileged front) gets them."""
        self._listen_sock = listen_sock
        self._metrics_sock = metrics_sock
        self._host_keys = host_keys

    def set_sandbox_ensurer(self, ensurer: SandboxEnsurer | None) -> None:
        """Use ``ensurer`` for connections that start from now on."""
        self.config.sandbox_ensurer = ensurer
        self._hooks.ensurer = ensurer

    @property
    def addr(self) -> str:
        """The bound ``host:port`` (the real port when the configured one was 0)."""
        if self._acceptor is None:
            raise RuntimeError("the server is not started")
        host, port = self._acceptor.get_addresses()[0][:2]
        return format_address(str(host), int(port))

    def _token_verifier(self) -> TokenVerifier | None:
        if "token" not in self._state.auth_methods:
            return None
        if self.config.token_verifier is not None:
            return self.config.token_verifier
        assert self.config.token_key_file is not None  # auth_mode checked
        try:
            return HmacTokenVerifier(load_token_key(self.config.token_key_file))
        except ValueError as error:
            raise ConfigError(str(error)) from None

    async def start(self) -> None:
        release_held_warnings()  # through whatever warning routing the embedder set up
        host, port = parse_address(self.config.address)
        self._state.auth_mode = auth_mode(self.config)
        self._state.auth_methods = auth_methods(self._state.auth_mode)
        self._state.signature_algorithms = frozenset(self.config.host_key_algorithms)
        self._state.token_verifier = self._token_verifier()
        self._state.max_connection_age = self.config.max_connection_age
        check_algorithms(self.config)
        check_set_env(self.config)
        if self._state.auth_mode == "none" and not is_loopback(self.config.address):
            log.warning(
                "authentication is OFF on %s (--insecure-allow-no-auth): anyone who "
                "can reach it can use any sandbox",
                self.config.address,
            )
        if isinstance(self.config.sandbox_provider, PreparedProvider):
            await self.config.sandbox_provider.prepare()
        use_fast_chacha()
        host_keys = self._host_keys or load_host_keys(
            self.config.host_key_path, self.config.extra_host_key_paths
        )
        self._stopped.clear()
        self._state.stopping = False
        self._acceptor = await asyncssh.create_server(
            lambda: GatewayConnection(self._state),
            None if self._listen_sock else host or None,
            None if self._listen_sock else port,
            sock=self._listen_sock,
            server_host_keys=host_keys,
            server_version=self.config.server_version,
            encoding=None,
            line_editor=False,
            allow_scp=False,
            agent_forwarding=True,  # requests are answered by _ssh/agent.py, in the sandbox
            x11_forwarding=False,
            kex_algs=list(self.config.kex_algorithms),
            encryption_algs=list(self.config.ciphers),
            mac_algs=list(self.config.macs),
            signature_algs=list(self.config.host_key_algorithms),
            compression_algs=list(self.config.compression),
            login_timeout=self.config.login_timeout,
            keepalive_interval=self.config.client_alive_interval,
            keepalive_count_max=self.config.client_alive_count_max,
            # Passwords and keyboard-interactive carry tokens only (--auth token).
            password_auth="token" in self._state.auth_methods,
            kbdint_auth="token" in self._state.auth_methods,
            gss_host=None,
            **(
                {}
                if self._listen_sock
                else {"reuse_address": True, "reuse_port": self.config.reuse_port or None}
            ),
        )
        log.info("listening on %s (auth: %s)", self.addr, self._state.auth_mode)
        self._report_forwarding()
        if self.config.metrics_listen:
            metrics_host, metrics_port = parse_address(self.config.metrics_listen)
            self._endpoint = Endpoint(self.metrics, self._readiness)
            self.metrics_port = await self._endpoint.start(
                metrics_host,
                metrics_port,
                reuse_port=self.config.reuse_port,
                sock=self._metrics_sock,
            )

    async def _readiness(self) -> str | None:
        if self._acceptor is None or self._state.stopping or self._draining:
            return "the SSH listener is closed"
        provider = self.config.sandbox_provider
        if isinstance(provider, HealthReporter):
            return await provider.health()
        return None

    def _report_forwarding(self) -> None:
        provider = self.config.sandbox_provider
        if not isinstance(provider, SandboxNetwork):
            log.warning("forwarding is unavailable: the sandbox provider cannot open sockets")
            return
        problem = provider.forwarding_problem()
        if problem and len(self._state.forwarding_policy.disabled) < len(ForwardingKind):
            log.warning("forwarding is unavailable: %s; clients will get that reason", problem)

    async def serve_forever(self) -> None:
        """Serve until :meth:`stop` is called."""
        if self._acceptor is None:
            await self.start()
        await self._stopped.wait()

    async def drain(self, grace: float | None = None) -> None:
        """Stop accepting; let live connections go on until they end or ``grace`` seconds
        (``Config.drain_timeout``) pass, then stop.

        Another instance can meanwhile serve new connections on the same port
        (``Config.reuse_port``).
        """
        timeout = self.config.drain_timeout if grace is None else grace
        self._draining = True
        await self._close_listener()
        live = len(self._state.connections)
        log.info("draining: listener closed; %d connection(s) may go on for %gs", live, timeout)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._state.connections and loop.time() < deadline and not self._state.stopping:
            waits = [asyncio.ensure_future(c.wait_closed()) for c in self._state.connections]
            await asyncio.wait(waits, timeout=deadline - loop.time(), return_when="FIRST_COMPLETED")
            for wait in waits:
                wait.cancel()
        if self._state.connections and not self._state.stopping:
            log.info("drain timeout: hanging up %d connection(s)", len(self._state.connections))
        await self.stop()

    async def _close_listener(self) -> None:
        if self._acceptor is not None:
            self._acceptor.close()
            with contextlib.suppress(Exception):
                await self._acceptor.wait_closed()

    async def stop(self) -> None:
        """Close the listener, end live connections, and wait for their sessions to hang up."""
        if self._state.stopping:
            await self._stopped.wait()
            return
        self._state.stopping = True
        self._heap.cancel()
        await self._close_listener()
        connections = list(self._state.connections)
        for connection in connections:
            connection.close("the gateway is shutting down")
        if connections:
            await asyncio.wait(
                [asyncio.ensure_future(c.wait_closed()) for c in connections],
                timeout=_STOP_TIMEOUT,
            )
        if self._background:
            _, pending = await asyncio.wait(list(self._background), timeout=_STOP_TIMEOUT)
            for task in pending:
                task.cancel()
        if self._endpoint is not None:
            await self._endpoint.stop()
        self._stopped.set()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._reap)

    def _reap(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("background task failed: %r", task.exception())
