"""The HTTP hook protocol against a real HTTP server, end to end through `sandbox-ssh serve`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..support.containers import Containers
from ..support.gateway import CliGateway
from ..support.hookserver import TOKEN, HookServer
from ..support.netclient import free_port
from ..support.ssh import SSHClient
from ..support.wait import wait_until


@pytest.fixture
def hooked_gateway(
    tmp_path: Path, hook_server: HookServer, client_tools: None, sandbox_image: str
) -> Iterator[tuple[CliGateway, SSHClient]]:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    gateway = CliGateway(
        tmp_path / "host_key",
        "--ensure-url",
        hook_server.url("ensure"),
        "--user-info-url",
        hook_server.url("user"),
        "--env-url",
        hook_server.url("env"),
        "--track-url",
        hook_server.url("track"),
        "--hook-token-file",
        str(token_file),
        "--hook-timeout",
        "1",
    )
    yield gateway, SSHClient(gateway.host, gateway.port, gateway.host_key_path, tmp_path / "client")
    gateway.terminate()


def test_all_four_hooks_answer(
    hooked_gateway: tuple[CliGateway, SSHClient], hook_server: HookServer, containers: Containers
) -> None:
    gateway, ssh = hooked_gateway
    sandbox = containers.start()
    result = ssh.run(sandbox.session_id, 'id -un; printenv PLATFORM_TOKEN; printf "%s|" "$MULTI"')
    assert result.stdout == b"dev\nfrom-hook\na\nb|", result.stderr
    expected = {"session_id": sandbox.session_id}
    assert hook_server.hooks("ensure") == [expected]
    assert hook_server.hooks("user") == [expected]
    assert hook_server.hooks("env") == [expected]

    def both_track_events() -> list[dict[str, Any]] | None:
        events = hook_server.hooks("track")
        return events if len(events) == 2 else None

    events = wait_until(both_track_events)
    assert [e["event"] for e in events] == ["connect", "disconnect"]
    assert events[0]["connection_id"] == events[1]["connection_id"]
    assert {auth for _, _, auth in hook_server.calls} == {f"Bearer {TOKEN}"}
    assert "from-hook" not in gateway.log_text() and TOKEN not in gateway.log_text()


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("ensure:403", "billing: account suspended"),
        ("ensure:500", "the ensure hook did not answer: HTTP 500"),
        ("ensure:slow", "the ensure hook did not answer: it timed out"),
        ("ensure:garbage", "the ensure hook returned malformed JSON"),
        ("user:garbage", "cannot prepare the session: the user-info hook returned malformed JSON"),
        ("env:500", "cannot prepare the session: the env hook did not answer: HTTP 500"),
    ],
)
def test_hook_failures_refuse_with_a_reason_and_others_keep_working(
    hooked_gateway: tuple[CliGateway, SSHClient],
    hook_server: HookServer,
    containers: Containers,
    mode: str,
    reason: str,
) -> None:
    _, ssh = hooked_gateway
    broken, healthy = containers.start(), containers.start()
    hook_server.behaviour[broken.session_id] = mode
    refused = ssh.run(broken.session_id, "echo reached")
    assert refused.returncode == 255
    assert f'session "{broken.session_id}": {reason}'.encode() in refused.stderr, refused.stderr
    assert b"Traceback" not in refused.stderr
    if mode.endswith((":500", ":slow")):
        attempts = [
            b
            for h, b, _ in hook_server.calls
            if b["session_id"] == broken.session_id and h == mode.split(":")[0]
        ]
        assert len(attempts) == 3  # retried with backoff before giving up
    assert ssh.run(healthy.session_id, "echo fine").stdout == b"fine\n"


def test_dead_hook_endpoint_fails_closed(
    tmp_path: Path, containers: Containers, client_tools: None
) -> None:
    dead = free_port()
    with CliGateway(
        tmp_path / "key", "--env-url", f"http://127.0.0.1:{dead}/env", "--hook-timeout", "1"
    ) as gateway:
        ssh = SSHClient(gateway.host, gateway.port, gateway.host_key_path, tmp_path / "client")
        sandbox = containers.start()
        result = ssh.run(sandbox.session_id, "true")
        assert result.returncode == 255
        assert b"cannot prepare the session: the env hook did not answer" in result.stderr
        assert gateway.process.poll() is None


def test_hook_protocol_doc_examples_are_valid_json() -> None:
    doc = Path(__file__).resolve().parents[2] / "docs" / "http-hooks.md"
    blocks = doc.read_text().split("```json")[1:]
    assert blocks
    for block in blocks:
        json.loads(block.split("```")[0])


def test_authorized_keys_from_the_http_hook(
    tmp_path: Path, hook_server: HookServer, containers: Containers, client_tools: None
) -> None:
    import subprocess

    key = tmp_path / "user_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    with CliGateway(
        tmp_path / "host_key",
        "--auth",
        "publickey",
        "--authorized-keys-url",
        hook_server.url("keys"),
        "--hook-token-file",
        str(token_file),
    ) as gateway:
        ssh = SSHClient(gateway.host, gateway.port, gateway.host_key_path, tmp_path / "client")
        sandbox = containers.start()
        options = ["-o", f"IdentityFile={key}", "-o", "IdentitiesOnly=yes"]
        assert ssh.run(sandbox.session_id, "true", options=options).returncode == 255
        hook_server.keys[sandbox.session_id] = Path(f"{key}.pub").read_text()
        assert ssh.run(sandbox.session_id, "echo hooked", options=options).stdout == b"hooked\n"
