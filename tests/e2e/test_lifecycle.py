"""Stopped sandboxes: started on connect by the ensurer, refused without one."""

from __future__ import annotations

from ..conftest import GatewayFactory
from ..support.containers import Containers, docker


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
