"""The gateway server: listens, serves, stops cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

import asyncssh

from ._session.ensure import EnsureCoordinator
from ._session.forwarding import ForwardingKind
from ._session.resolve import Hooks
from ._ssh.connection import GatewayConnection, GatewayState
from ._ssh.hostkey import load_or_create_host_key
from .config import Config, format_address, forwarding_policy, parse_address, subsystem_config
from .hooks import SandboxEnsurer, SandboxNetwork

log = logging.getLogger("sandbox_ssh.server")

# asyncssh logs commands at INFO and env values at debug level; both can carry secrets.
logging.getLogger("asyncssh").setLevel(logging.WARNING)

_STOP_TIMEOUT = 10.0


class Server:
    """An SSH gateway serving the sandboxes that ``config.sandbox_provider`` finds."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._hooks = Hooks(
            provider=config.sandbox_provider,
            ensurer=config.sandbox_ensurer,
            user_info_fetcher=config.user_info_fetcher,
            env_var_fetcher=config.env_var_fetcher,
            ensures=EnsureCoordinator(config.ensure_timeout),
            user_fallback_root=config.user_fallback_root,
        )
        self._background: set[asyncio.Task[None]] = set()
        self._state = GatewayState(
            hooks=self._hooks,
            tracker=config.connection_tracker,
            spawn=self._spawn,
            forwarding_policy=forwarding_policy(config),
            subsystems=subsystem_config(config),
            accept_env=config.accept_env,
        )
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self._stopped = asyncio.Event()

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

    async def start(self) -> None:
        host, port = parse_address(self.config.address)
        host_key = load_or_create_host_key(self.config.host_key_path)
        self._stopped.clear()
        self._state.stopping = False
        self._acceptor = await asyncssh.create_server(
            lambda: GatewayConnection(self._state),
            host or None,
            port,
            server_host_keys=[host_key],
            server_version=self.config.server_version,
            encoding=None,
            line_editor=False,
            allow_scp=False,
            agent_forwarding=False,
            x11_forwarding=False,
            compression_algs=["none"],
            login_timeout=self.config.login_timeout,
            reuse_address=True,
        )
        log.info("listening on %s", self.addr)
        self._report_forwarding()

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

    async def stop(self) -> None:
        """Close the listener, end live connections, and wait for their sessions to hang up."""
        self._state.stopping = True
        if self._acceptor is not None:
            self._acceptor.close()
            with contextlib.suppress(Exception):
                await self._acceptor.wait_closed()
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
        self._stopped.set()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._reap)

    def _reap(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("background task failed: %r", task.exception())
