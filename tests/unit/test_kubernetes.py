"""Pure logic of the Kubernetes provider: pod and container choice, framing, the login preamble.

These are unit tests against recorded frames and models, not integration coverage; the
conformance and e2e suites drive the provider against an API server.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from kubernetes_asyncio.client import (
    V1Container,
    V1ContainerState,
    V1ContainerStateRunning,
    V1ContainerStateWaiting,
    V1ContainerStatus,
    V1ObjectMeta,
    V1Pod,
    V1PodSpec,
    V1PodStatus,
)

from sandbox_ssh import SandboxError, SandboxStatus, TerminalSize
from sandbox_ssh.providers._stdio._frames import FrameReader, Kind, encode
from sandbox_ssh.providers.kubernetes._channels import (
    OFFERED_PROTOCOLS,
    V5_PROTOCOL,
    close_message,
    parse_status,
    resize_message,
    split_message,
)
from sandbox_ssh.providers.kubernetes._client import negotiated_protocol
from sandbox_ssh.providers.kubernetes._login import LOGIN_SCRIPT, login_preamble
from sandbox_ssh.providers.kubernetes._select import (
    can_be_label_value,
    choose_container,
    choose_pod,
    pod_status,
    waiting_reason,
)

LABEL = "sandbox-ssh.session"


def pod(
    name: str,
    session: str | None,
    *,
    containers: tuple[str, ...] = ("main",),
    annotations: dict[str, str] | None = None,
    phase: str = "Running",
    running: bool = True,
    waiting: str | None = None,
    terminating: bool = False,
) -> V1Pod:
    state = (
        V1ContainerState(running=V1ContainerStateRunning())
        if running
        else V1ContainerState(waiting=V1ContainerStateWaiting(reason=waiting))
    )
    return V1Pod(
        metadata=V1ObjectMeta(
            name=name,
            namespace="sandboxes",
            labels={LABEL: session} if session is not None else {},
            annotations=annotations,
            deletion_timestamp=datetime.now(UTC) if terminating else None,
        ),
        spec=V1PodSpec(containers=[V1Container(name=c) for c in containers]),
        status=V1PodStatus(
            phase=phase,
            container_statuses=[
                V1ContainerStatus(
                    name=c, image="i", image_id="", ready=running, restart_count=0, state=state
                )
                for c in containers
            ],
        ),
    )


def test_the_pod_whose_label_equals_the_session_id_exactly() -> None:
    pods = [pod("a", "abc"), pod("b", "abcd"), pod("c", "ab"), pod("d", None)]
    chosen = choose_pod(pods, LABEL, "abc")
    assert chosen is not None and chosen.metadata.name == "a"
    assert choose_pod(pods, LABEL, "ABC") is None
    assert choose_pod(pods, LABEL, "a") is None


def test_a_terminating_pod_is_ignored_and_two_live_pods_are_an_error() -> None:
    assert choose_pod([pod("old", "s", terminating=True)], LABEL, "s") is None
    chosen = choose_pod([pod("old", "s", terminating=True), pod("new", "s")], LABEL, "s")
    assert chosen is not None and chosen.metadata.name == "new"
    with pytest.raises(SandboxError, match=r"2 pods carry .*sandboxes/x, sandboxes/y"):
        choose_pod([pod("x", "s"), pod("y", "s")], LABEL, "s")


def test_container_from_the_setting_then_the_annotation_then_the_first() -> None:
    two = ("sidecar", "work")
    assert choose_container(pod("p", "s", containers=two), None) == "sidecar"
    annotated = pod("p", "s", containers=two, annotations={"sandbox-ssh.container": "work"})
    assert choose_container(annotated, None) == "work"
    assert choose_container(annotated, "sidecar") == "sidecar"
    with pytest.raises(SandboxError, match='no container "nope"'):
        choose_container(annotated, "nope")


def test_status_and_what_a_pending_pod_waits_for() -> None:
    assert pod_status(pod("p", "s"), "main") is SandboxStatus.RUNNING
    creating = pod("p", "s", phase="Pending", running=False, waiting="ContainerCreating")
    assert pod_status(creating, "main") is SandboxStatus.STOPPED
    assert waiting_reason(creating, "main") == "ContainerCreating"
    assert pod_status(pod("p", "s", phase="Succeeded"), "main") is SandboxStatus.UNAVAILABLE
    assert pod_status(pod("p", "s", phase="Failed"), "main") is SandboxStatus.UNAVAILABLE


def test_session_ids_no_label_value_can_hold() -> None:
    assert can_be_label_value("abc-123_x.y")
    for bad in ("", "a" * 64, "-abc", "abc.", "a b", "a/b"):
        assert not can_be_label_value(bad), bad
    assert can_be_label_value("a" * 63)


# Recorded from a kubelet's exec stream (status channel, v4 and v5 alike).
SUCCESS = b'{"metadata":{},"status":"Success"}'
EXIT_3 = (
    b'{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: '
    b'error executing command [sh -c exit 3], exit code 3","reason":"NonZeroExitCode",'
    b'"details":{"causes":[{"reason":"ExitCode","message":"3"}]}}'
)
NOT_FOUND = (
    b'{"metadata":{},"status":"Failure","message":"OCI runtime exec failed: exec failed: unable '
    b'to start container process: exec: \\"nope\\": executable file not found in $PATH: '
    b'unknown","reason":"InternalError","details":{"causes":[{"message":"OCI runtime exec '
    b'failed"}]},"code":500}'
)


def test_exit_status_from_the_status_channel() -> None:
    assert parse_status(SUCCESS).code == 0
    assert parse_status(EXIT_3).code == 3
    failed = parse_status(NOT_FOUND)
    assert failed.code is None and failed.failure and "executable file not found" in failed.failure


def test_channel_messages() -> None:
    assert split_message(b"\x01hello") == (1, b"hello")
    assert close_message(0) == b"\xff\x00"
    channel, data = split_message(resize_message(TerminalSize(cols=120, rows=40)))
    assert channel == 4 and json.loads(data) == {"Width": 120, "Height": 40}


def test_the_login_preamble_round_trips_through_the_wrapper_in_sh() -> None:
    # The wrapper's reading half, run by a real sh: values with newlines, quotes, '%' and
    # non-ASCII come out as they went in. (The user switch is left to the e2e suites.)
    reader = LOGIN_SCRIPT.split('echo "$$"', 1)[1].split('[ -z "$saved" ]', 1)[0]
    script = reader + 'printf "%s|%s|%s|" "$uid" "$gid" "$dir"; printf "[%s]" "$@"'
    env = {"A": "one\ntwo", "B": "50% 'q' \"d\" é", "EMPTY": ""}
    preamble = login_preamble(1000, 1000, "/home/dev dir", env, ["sh", "-c", "echo $HOME\\n"])
    result = subprocess.run(["dash", "-c", script], input=preamble, capture_output=True, check=True)
    assert result.stdout.decode() == (
        "1000|1000|/home/dev dir|[A=one\ntwo][B=50% 'q' \"d\" é][EMPTY=][sh][-c][echo $HOME\\n]"
    )


def test_helper_frames_are_split_whatever_the_chunking() -> None:
    stream = encode(Kind.OPEN, 7) + encode(Kind.DATA, 7, b"x" * 1000) + encode(Kind.EOF, 7)
    reader = FrameReader()
    frames = [f for i in range(0, len(stream), 5) for f in reader.feed(stream[i : i + 5])]
    assert frames == [(Kind.OPEN, 7, b""), (Kind.DATA, 7, b"x" * 1000), (Kind.EOF, 7, b"")]
    with pytest.raises(ValueError):
        list(FrameReader().feed(b"\x00\x00\x00\x01\x09\x00\x00\x00\x00"))


def test_negotiated_protocol_is_read_from_the_handshake() -> None:
    """Pins the aiohttp internal negotiated_protocol reads (ClientWebSocketResponse._response)."""

    async def main() -> tuple[str, str]:
        async def handler(request: web.Request) -> web.WebSocketResponse:
            offered = request.headers.get("Sec-WebSocket-Protocol", "")
            ws = web.WebSocketResponse(protocols=[V5_PROTOCOL])
            await ws.prepare(request)
            await ws.send_bytes(b"\x01" + offered.encode())
            await ws.close()
            return ws

        app = web.Application()
        app.router.add_get("/exec", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            async with aiohttp.ClientSession() as session:
                headers: dict[str, Any] = {"sec-websocket-protocol": OFFERED_PROTOCOLS}
                async with session.ws_connect(
                    f"http://127.0.0.1:{port}/exec", headers=headers
                ) as ws:
                    message = await ws.receive()
                    return negotiated_protocol(ws), message.data[1:].decode()
        finally:
            await runner.cleanup()

    chosen, offered = asyncio.run(main())
    assert chosen == V5_PROTOCOL
    assert offered == OFFERED_PROTOCOLS
