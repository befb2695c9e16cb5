"""asyncssh's agent forwarding, with the socket inside the sandbox instead of on the gateway.

Left alone, asyncssh answers `auth-agent-req@openssh.com` by listening on a
socket in the gateway host's /tmp. Here the request makes the socket in the
sandbox (see _session/agent.py), and each connection to it becomes an
`auth-agent@openssh.com` channel to the client, relayed like any forwarded
connection.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncssh

from .._session.agent import AgentForwarding, AgentRefused
from .._session.forwarding import Forwarding
from .forwarding import serve_relayed
from .internals import open_agent_channel, replace_agent_listener
from .relay import Relay


def serve_agent(
    conn: asyncssh.SSHServerConnection,
    agent: AgentForwarding,
    allowed: bool,
    log: logging.Logger | logging.LoggerAdapter[logging.Logger],
    forwarding: Forwarding,
) -> None:
    """Answer this connection's agent forwarding requests with a socket in the sandbox."""
    servers: list[asyncio.AbstractServer] = []

    async def create_agent_listener() -> bool:
        if not allowed:
            reason = "agent forwarding is disabled on this gateway (--no-agent-forwarding)"
        elif not conn.check_key_permission("agent-forwarding"):
            reason = "the key's authorized_keys line forbids it (no-agent-forwarding)"
        elif not conn.check_certificate_permission("agent-forwarding"):
            reason = "the user certificate does not permit it"
        else:
            try:
                bound = await agent.open()
            except AgentRefused as refusal:
                reason = str(refusal)
            else:
                if not servers:
                    servers.append(await serve_relayed(bound, open_channel, forwarding))
                return True
        log.info("agent forwarding refused: %s", reason, extra={"event": "agent.refused"})
        agent.refusal = reason
        return False

    async def open_channel(relay: Relay, transport: Any) -> None:
        await open_agent_channel(conn, lambda: relay.channel_side)

    replace_agent_listener(conn, create_agent_listener)
