"""Stopped sandboxes: started on connect by the ensurer, refused without one."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import asyncssh
import pytest

from ..conftest import GatewayFactory
from ..support.containers import Container, Containers, docker
from ..support.gateway import CliGateway
from ..support.ssh import SSHClient
from ..support.wait import wait_until


def test_created_sandbox_is_started_on_connect(
    gateway_factory: GatewayFactory, containers: Containers
) -> None:
    gw = gateway_factory()
    sandbox = containers.start(running=False)
    assert sandbox.state()["Running"] is False
    result = gw.client.run(sandbox.session_id, "echo started")
    assert result.stdout == b"started\n", result.stderr
    assert sandbox.state()["Running"] is True


def test_exited_and_paused_sandboxes_are_brought_back(
    gateway_factory: GatewayFactory, containers: Containers
) -> None:
    gw = gateway_factory()
    exited = containers.start()
    exited.stop()
    paused = containers.start()
    docker("pause", paused.id)
    for sandbox in (exited, paused):
        result = gw.client.run(sandbox.session_id, "echo back")
        assert result.stdout == b"back\n", result.stderr
        assert sandbox.state()["Running"] is True
        assert sandbox.state()["Paused"] is False


def test_stopped_sandbox_is_refused_without_an_ensurer(
    gateway_factory: GatewayFactory, containers: Containers
) -> None:
    gw = gateway_factory(auto_start=False)
    sandbox = containers.start(running=False)
    result = gw.client.run(sandbox.session_id, "echo reached")
    assert result.returncode == 255
    assert f'session "{sandbox.session_id}": the sandbox is stopped'.encode() in result.stderr
    assert sandbox.state()["Running"] is False


class FailingEnsurer:
    async def ensure_sandbox(self, session_id: str) -> None:
        raise RuntimeError("quota exceeded for this team\nsecond line is folded")


def test_ensurer_error_rejects_with_its_message(
    gateway_factory: GatewayFactory, containers: Containers
) -> None:
    gw = gateway_factory(sandbox_ensurer=FailingEnsurer())
    sandbox = containers.start()
    result = gw.client.run(sandbox.session_id, "echo reached")
    assert result.returncode == 255
    expected = f'session "{sandbox.session_id}": quota exceeded for this team second line is folded'
    assert expected.encode() in result.stderr


def test_set_sandbox_ensurer_after_start_applies_to_new_connections(
    gateway_factory: GatewayFactory, containers: Containers
) -> None:
    gw = gateway_factory(auto_start=False)
    sandbox = containers.start(running=False)
    assert gw.client.run(sandbox.session_id, "true").returncode == 255
    gw.gateway.server.set_sandbox_ensurer(gw.provider)
    result = gw.client.run(sandbox.session_id, "echo now-started")
    assert result.stdout == b"now-started\n", result.stderr


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_sandbox_stopped_mid_session_ends_the_channel_not_the_connection(
    gateway_factory: GatewayFactory, containers: Containers, exec_path: str, how: str
) -> None:
    gw = gateway_factory(auto_start=False)
    sandbox = containers.start()

    async def scenario() -> tuple[asyncssh.SSHCompletedProcess, asyncssh.SSHCompletedProcess]:
        async with asyncssh.connect(
            gw.gateway.host, gw.gateway.port, username=sandbox.session_id, known_hosts=None
        ) as conn:
            process = await conn.create_process("echo up; exec sleep 600")
            assert await process.stdout.readline() == "up\n"
            await asyncio.to_thread(
                docker, *(["kill"] if how == "kill" else ["stop", "-t", "1"]), sandbox.id
            )
            ended = await asyncio.wait_for(process.wait(), 30)
            again = await conn.run("echo again")
            return ended, again

    ended, again = gw.gateway.loop.run(scenario())
    if exec_path == "runtime":
        # The process died with its sandbox, of SIGKILL, and exit-signal says so.
        assert ended.exit_signal is not None and ended.exit_signal[0] == "KILL"
    else:
        assert ended.exit_status in (137, 255)
    # The connection outlived the sandbox: a new channel gets a reason, not a hang.
    assert again.exit_status == 255
    assert "the sandbox is not running" in str(again.stderr)


def test_sigkilled_gateway_leaves_no_reader_behind(
    tmp_path: Path, sandbox: Container, client_tools: None
) -> None:
    with CliGateway(tmp_path / "host_key") as gateway:
        ssh = SSHClient(gateway.host, gateway.port, gateway.host_key_path, tmp_path / "client")
        client = ssh.popen(
            sandbox.session_id,
            "echo up; exec cat",
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert client.stdout is not None and client.stdout.readline() == b"up\n"
        gateway.process.kill()
        gateway.process.wait()
        # As when sshd's connection drops: the reader sees EOF and ends.
        wait_until(lambda: "cat" not in sandbox.processes(), message="cat outlived the gateway")
        client.kill()
        client.wait()
