"""ssh-agent forwarding: one socket per connection, inside the sandbox, owned by its user.

The client's agent is reached through `auth-agent@openssh.com` channels; what
this module owns is the socket the sandbox's processes connect to, and the
SSH_AUTH_SOCK they are given. It is made on the connection's first request
(OpenSSH's ssh -A sends it before the shell or command), shared by every
channel of the connection (ControlMaster included), and removed when the
connection ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ..hooks import AgentSocketHost, BoundListener, SandboxProvider
from .audit import ConnectionAudit
from .resolve import ResolvedConnection, one_line

log = logging.getLogger("sandbox_ssh.agent")


class AgentRefused(Exception):
    """Agent forwarding cannot be offered; ``str()`` is the one-line reason."""


class AgentForwarding:
    def __init__(
        self,
        provider: SandboxProvider,
        connection: ResolvedConnection,
        audit: ConnectionAudit,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = log,
    ) -> None:
        self._host = provider if isinstance(provider, AgentSocketHost) else None
        self._connection = connection
        self._audit = audit
        self._log = logger
        self._listener: asyncio.Future[BoundListener] | None = None
        self._closed = False
        # Why the client's request was refused, for the user of an interactive shell:
        # ssh sends the request without asking for a reply, so nothing else would tell them.
        self.refusal: str | None = None

    async def open(self) -> BoundListener:
        """The connection's agent socket, made on the first call; raises AgentRefused."""
        if self._listener is None:
            self._listener = asyncio.ensure_future(self._make())
        return await asyncio.shield(self._listener)

    async def _make(self) -> BoundListener:
        if self._host is None:
            raise AgentRefused("this sandbox provider cannot make sockets in the sandbox")
        try:
            bound = await self._host.listen_agent_socket(
                self._connection.sandbox, self._connection.user
            )
        except Exception as error:
            raise AgentRefused(one_line(error)) from error
        if self._closed:
            bound.sock.close()
            bound.cleanup()
            raise AgentRefused("the connection ended")
        self._audit.record("agent.forward", socket=bound.path)
        return bound

    async def socket_path(self) -> str | None:
        """SSH_AUTH_SOCK for a new process: set once the client asked for forwarding."""
        if self._listener is None:
            return None
        try:
            return (await asyncio.shield(self._listener)).path
        except AgentRefused:
            return None

    def close(self) -> None:
        """Remove the socket and its directory (the connection ended)."""
        self._closed = True
        listener = self._listener
        if listener is None or not listener.done() or listener.cancelled():
            return
        if listener.exception() is not None:
            return
        bound = listener.result()
        with contextlib.suppress(OSError):
            bound.sock.close()
        bound.cleanup()
