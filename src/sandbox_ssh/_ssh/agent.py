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
from collections.abc import Callable
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
) -> Callable[[], None]:
    """Answer this connection's agent forwarding requests with a socket in the sandbox.

    Returns what stops serving that socket, to be called when the connection ends and
    before ``agent.close()``: the server owns the socket's descriptor from then on, and
    only its own close may release it (see ``_close_server``).
    """
    serving: asyncio.Task[asyncio.AbstractServer] | None = None

    async def create_agent_listener() -> bool:
        nonlocal serving
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
                # One server per socket, however many channels ask at once (ControlMaster).
                if serving is None:
                    serving = asyncio.ensure_future(serve_relayed(bound, open_channel, forwarding))
                await asyncio.shield(serving)
                return True
        log.info("agent forwarding refused: %s", reason, extra={"event": "agent.refused"})
        agent.refusal = reason
        return False

    async def open_channel(relay: Relay, transport: Any) -> None:
        await open_agent_channel(conn, lambda: relay.channel_side)

    def stop() -> None:
        if serving is None:
            return
        if serving.done():
            _close_server(serving)
        else:
            serving.add_done_callback(_close_server)

    replace_agent_listener(conn, create_agent_listener)
    return stop


def _close_server(serving: asyncio.Task[asyncio.AbstractServer]) -> None:
    """Close the agent socket's server, on the loop's thread.

    Left to the garbage collector, uvloop's server and the socket object each close
    the same descriptor number, from whichever thread collects them: the second close
    can hit a descriptor another thread has just opened (it once took the next
    connection's agent socket with EBADF; docs/upstream/uvloop-unclosed-server-double-close.md).
    """
    if not serving.cancelled() and serving.exception() is None:
        serving.result().close()
