"""Forwarding policy: what may be dialled or listened on, always inside the sandbox."""

from __future__ import annotations

import asyncio
import enum
import logging
import socket
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

from .._metrics import Metrics
from ..hooks import BoundListener, SandboxNetwork, SandboxProvider
from .audit import ConnectionAudit, NoAudit
from .loop_share import TenantLoopShare
from .quotas import QuotaExceeded, TenantQuota
from .resolve import ResolvedConnection, one_line
from .shares import DEFAULT_FORWARDED_PER_SESSION, Release, TenantShares

log = logging.getLogger("sandbox_ssh.forwarding")
T = TypeVar("T")


class ForwardingKind(enum.Enum):
    LOCAL = "local"  # direct-tcpip: ssh -L, -D, -W
    REMOTE = "remote"  # tcpip-forward: ssh -R
    LOCAL_SOCKET = "local-socket"  # direct-streamlocal@openssh.com: ssh -L port:/path
    REMOTE_SOCKET = "remote-socket"  # streamlocal-forward@openssh.com: ssh -R /path:...


_CHANNEL_KIND = {
    ForwardingKind.LOCAL: "direct-tcpip",
    ForwardingKind.REMOTE: "tcpip-forward",
    ForwardingKind.LOCAL_SOCKET: "direct-streamlocal",
    ForwardingKind.REMOTE_SOCKET: "streamlocal-forward",
}


@dataclass(frozen=True)
class ForwardingPolicy:
    """Which forwarding kinds are allowed; all of them by default, as with sshd."""

    disabled: frozenset[ForwardingKind] = frozenset()

    @classmethod
    def none(cls) -> ForwardingPolicy:
        return cls(frozenset(ForwardingKind))

    def allows(self, kind: ForwardingKind) -> bool:
        return kind not in self.disabled


class ForwardingRefused(Exception):
    """``prohibited``: by policy (SSH's "administratively prohibited"); else it failed."""

    def __init__(self, reason: str, *, prohibited: bool) -> None:
        super().__init__(reason)
        self.prohibited = prohibited


def loopback_for(listen_host: str) -> str:
    """Where a remote forward listens: loopback only, like sshd's default GatewayPorts=no."""
    return "::1" if listen_host.strip("[]") in ("::1", "::") else "127.0.0.1"


class Forwarding:
    """The forwarding requests of one connection."""

    def __init__(
        self,
        provider: SandboxProvider,
        connection: ResolvedConnection,
        policy: ForwardingPolicy,
        audit: ConnectionAudit | None = None,
        *,
        metrics: Metrics | None = None,
        log: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
        shares: TenantShares | None = None,
    ) -> None:
        self._network = provider if isinstance(provider, SandboxNetwork) else None
        self._shares = shares or TenantShares(DEFAULT_FORWARDED_PER_SESSION)
        self._connection = connection
        self._policy = policy
        self._audit = audit or ConnectionAudit(NoAudit(), "-")
        self._metrics = metrics or Metrics()
        self.log = log if log is not None else logging.getLogger("sandbox_ssh.forwarding")
        self._binding: set[asyncio.Future[Any]] = set()
        # The tenant's share of the loop for relaying, once authenticated.
        self.loop_share: TenantLoopShare | None = None
        self.quota: TenantQuota | None = None  # the tenant's, once authenticated

    def take_share(self) -> Release:
        """A forwarded connection's place in the session's share; ForwardingRefused when full."""
        release = self._shares.take(self._connection.session_id)
        if release is None:
            self._metrics.refusals.labels("forwarded_per_session").inc()
            raise ForwardingRefused(
                "too many forwarded connections to this session "
                f"(at most {self._shares.per_tenant})",
                prohibited=False,
            )
        if self.quota is None:
            return release
        try:
            channel_released = self.quota.channel()
        except QuotaExceeded as error:
            release()
            raise ForwardingRefused(str(error), prohibited=False) from None

        def release_both() -> None:
            release()
            channel_released()

        return release_both

    async def listeners_settled(self) -> None:
        """Wait until every remote forward requested so far is bound or refused.

        `ssh -R PORT:... host cmd` does not wait for the bind before the session starts;
        under sshd the bind is instant, so cmd can use PORT at once. A provider that binds
        through a helper in the sandbox takes longer, so sessions wait for it here.
        """
        if self._binding:
            await asyncio.wait(set(self._binding))

    async def _binds(self, operation: Awaitable[T]) -> T:
        future = asyncio.ensure_future(operation)
        self._binding.add(future)
        future.add_done_callback(self._binding.discard)
        return await future

    async def _audited(self, kind: ForwardingKind, target: str, operation: Awaitable[T]) -> T:
        try:
            result = await operation
        except ForwardingRefused as refusal:
            self._audit.record(
                "forward.refused", kind=kind.value, target=target, reason=str(refusal)
            )
            raise
        self._audit.record("forward", kind=kind.value, target=target)
        self._metrics.channels.labels(_CHANNEL_KIND[kind]).inc()
        return result

    def _require(self, kind: ForwardingKind) -> SandboxNetwork:
        if not self._policy.allows(kind):
            raise ForwardingRefused(
                f"{kind.value} forwarding is disabled on this gateway", prohibited=True
            )
        if self._network is None:
            raise ForwardingRefused(
                "this sandbox provider cannot forward connections", prohibited=True
            )
        problem = self._network.forwarding_problem()
        if problem:
            raise ForwardingRefused(problem, prohibited=True)
        return self._network

    async def connect_tcp(self, host: str, port: int) -> socket.socket:
        return await self._audited(
            ForwardingKind.LOCAL, f"{host}:{port}", self._connect_tcp(host, port)
        )

    async def _connect_tcp(self, host: str, port: int) -> socket.socket:
        network = self._require(ForwardingKind.LOCAL)
        try:
            return await network.connect_tcp(self._connection.sandbox, host, port)
        except Exception as error:
            raise ForwardingRefused(one_line(error), prohibited=False) from error

    async def connect_unix(self, path: str) -> socket.socket:
        operation = self._connect_unix(path)
        return await self._audited(ForwardingKind.LOCAL_SOCKET, path, operation)

    async def _connect_unix(self, path: str) -> socket.socket:
        network = self._require(ForwardingKind.LOCAL_SOCKET)
        if not path.startswith("/"):
            raise ForwardingRefused(f"socket path {path!r} is not absolute", prohibited=False)
        try:
            return await network.connect_unix(self._connection.sandbox, path, self._connection.user)
        except Exception as error:
            raise ForwardingRefused(one_line(error), prohibited=False) from error

    async def listen_tcp(self, host: str, port: int) -> BoundListener:
        return await self._binds(
            self._audited(ForwardingKind.REMOTE, f"{host}:{port}", self._listen_tcp(host, port))
        )

    async def _listen_tcp(self, host: str, port: int) -> BoundListener:
        network = self._require(ForwardingKind.REMOTE)
        if 0 < port < 1024 and self._connection.user.uid != 0:
            raise ForwardingRefused(f"port {port} is privileged", prohibited=True)
        try:
            return await network.listen_tcp(self._connection.sandbox, loopback_for(host), port)
        except Exception as error:
            raise ForwardingRefused(one_line(error), prohibited=False) from error

    async def listen_unix(self, path: str) -> BoundListener:
        operation = self._listen_unix(path)
        return await self._binds(self._audited(ForwardingKind.REMOTE_SOCKET, path, operation))

    async def _listen_unix(self, path: str) -> BoundListener:
        network = self._require(ForwardingKind.REMOTE_SOCKET)
        if not path.startswith("/"):
            raise ForwardingRefused(f"socket path {path!r} is not absolute", prohibited=False)
        try:
            return await network.listen_unix(self._connection.sandbox, path, self._connection.user)
        except Exception as error:
            raise ForwardingRefused(one_line(error), prohibited=False) from error
