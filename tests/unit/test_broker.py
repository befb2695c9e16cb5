"""The broker's bounds and bookkeeping, with a stand-in for the Docker provider behind it.

The real broker, with the real provider, is under test in tests/conformance (every
provider test through it) and tests/e2e/test_privsep.py; here only what needs a
provider that can be made slow or plentiful on purpose.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any, cast

import pytest

from sandbox_ssh._broker import protocol, server
from sandbox_ssh._broker.server import Broker
from sandbox_ssh.hooks import Sandbox, SandboxStatus
from sandbox_ssh.providers.docker import DockerProvider


class SlowProvider:
    """Finds every session's sandbox, once ``release`` is set."""

    label = "sandbox-ssh.session"
    exec_path = "runtime"

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.finding = 0

    async def prepare(self) -> None:
        pass

    def forwarding_problem(self) -> str | None:
        return None

    async def find_sandbox(self, session_id: str) -> Sandbox:
        self.finding += 1
        await self.release.wait()
        return Sandbox(session_id, f"container-of-{session_id}", SandboxStatus.RUNNING)

    async def ensure_sandbox(self, session_id: str) -> None:
        await self.release.wait()

    async def close(self) -> None:
        pass


class Front:
    """The front's end, speaking the wire format by hand."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.setblocking(False)

    async def send(self, message: dict[str, Any]) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, json.dumps(message).encode())

    async def replies(self, count: int) -> dict[int, dict[str, Any]]:
        loop = asyncio.get_running_loop()
        found: dict[int, dict[str, Any]] = {}
        while len(found) < count:
            data = await loop.sock_recv(self.sock, 1 << 16)
            reply = json.loads(data)
            found[reply["id"]] = reply
        return found


def serving(provider: SlowProvider) -> tuple[Broker, Front, socket.socket]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    broker = Broker(cast(DockerProvider, provider), start_timeout=1.0)
    broker.serve(theirs, "test")
    return broker, Front(ours), theirs


def test_a_front_has_a_bounded_number_of_requests_in_flight() -> None:
    async def main() -> dict[int, dict[str, Any]]:
        provider = SlowProvider()
        _, front, _ = serving(provider)
        for request_id in range(1, server.MAX_IN_FLIGHT + 3):
            session = f"s{request_id % 100}"  # spread over sandboxes, within their shares
            await front.send({"id": request_id, "op": "find", "session_id": session})
        refused = await front.replies(2)  # the two over the bound, answered at once
        assert provider.finding == server.MAX_IN_FLIGHT
        provider.release.set()
        return refused | await front.replies(server.MAX_IN_FLIGHT)

    replies = asyncio.run(main())
    over = [r for r in replies.values() if r.get("kind") == "limit"]
    assert len(over) == 2 and "requests at once" in over[0]["error"]
    assert sum("result" in r for r in replies.values()) == server.MAX_IN_FLIGHT


def test_one_sandboxs_slow_requests_hold_its_own_share_and_no_one_elses() -> None:
    async def main() -> dict[int, dict[str, Any]]:
        provider = SlowProvider()
        _, front, _ = serving(provider)
        for request_id in range(1, server.MAX_IN_FLIGHT_PER_SANDBOX + 2):
            await front.send({"id": request_id, "op": "ensure", "session_id": "slow"})
        refused = await front.replies(1)
        # Another tenant is still served at once.
        await front.send({"id": 1000, "op": "find", "session_id": "other"})
        provider.release.set()
        return refused | await front.replies(server.MAX_IN_FLIGHT_PER_SANDBOX + 1)

    replies = asyncio.run(main())
    over = [r for r in replies.values() if r.get("kind") == "limit"]
    assert len(over) == 1 and "for this sandbox" in over[0]["error"]
    assert replies[1000]["result"]["sandbox"]["id"] == "container-of-other"


def test_a_request_that_takes_too_long_is_answered_with_a_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(server, "REQUEST_TIMEOUT", 0.2)

    async def main() -> dict[int, dict[str, Any]]:
        _, front, _ = serving(SlowProvider())
        await front.send({"id": 1, "op": "find", "session_id": "stuck"})
        await front.send({"id": 2, "op": "hello"})
        return await front.replies(2)

    replies = asyncio.run(main())
    assert replies[1]["kind"] == "timeout" and replies[1]["error"] == "find took too long"
    assert replies[2]["result"]["exec_path"] == "runtime"  # the others are served meanwhile


def test_sandbox_handles_are_bounded_per_front(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server, "MAX_SANDBOXES", 3)

    async def main() -> dict[int, dict[str, Any]]:
        provider = SlowProvider()
        provider.release.set()
        _, front, _ = serving(provider)
        for request_id in range(1, 6):
            await front.send({"id": request_id, "op": "find", "session_id": f"s{request_id}"})
        await front.replies(5)
        # The first two were let go: asking about them says so, and finding again helps.
        await front.send({"id": 6, "op": "unlisten", "listener": 1})
        await front.send({"id": 7, "op": "tcp_sockets", "sandbox": 1, "host": "h"})
        return await front.replies(2)

    replies = asyncio.run(main())
    assert replies[7]["kind"] == "stale_handle"
    assert replies[6]["kind"] == "bad_request"  # a listener handle it never issued


def test_a_body_too_large_for_a_datagram_travels_in_a_sealed_memfd() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    big = {"id": 1, "op": "hello", "padding": "x" * (protocol.MAX_DATAGRAM * 2)}
    protocol.send(ours, big)
    received = protocol.receive(theirs)
    assert received is not None and received[0] == big and received[1] == []


def test_an_unsealed_body_is_refused() -> None:
    import array
    import os

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    body = os.memfd_create("unsealed")
    os.write(body, b'{"id": 1, "op": "hello"}')
    fds = array.array("i", [body])
    ours.sendmsg([b'{"body":"memfd"}'], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
    with pytest.raises(protocol.BadRequest, match="sealed memfd"):
        protocol.receive(theirs)
