"""Which container a username reaches: only the one labelled with exactly that session ID."""

from __future__ import annotations

from ..support.containers import Containers, new_session_id
from ..support.ssh import SSHClient


def assert_refused(ssh: SSHClient, session_id: str, reason: str) -> None:
    result = ssh.run(session_id, "echo reached")
    assert result.returncode == 255
    assert b"reached" not in result.stdout
    stderr = result.stderr.decode()
    assert f'session "{session_id}"' in stderr, stderr
    assert reason in stderr, stderr
    assert "Traceback" not in stderr


def test_unknown_session_is_refused_with_its_name(ssh: SSHClient) -> None:
    assert_refused(ssh, new_session_id("unknown"), "no sandbox with this session ID")


def test_unlabelled_container_is_unreachable_by_name(
    ssh: SSHClient, containers: Containers
) -> None:
    name = new_session_id("unlabelled")
    containers.start(labelled=False, name=name)
    assert_refused(ssh, name, "no sandbox")


def test_container_name_is_not_a_session_id(ssh: SSHClient, containers: Containers) -> None:
    name = new_session_id("named")
    containers.start(session_id=new_session_id("other"), name=name)
    assert_refused(ssh, name, "no sandbox")


def test_container_id_prefix_is_not_a_session_id(ssh: SSHClient, containers: Containers) -> None:
    sandbox = containers.start()
    assert_refused(ssh, sandbox.id[:12], "no sandbox")
    assert_refused(ssh, sandbox.id, "no sandbox")


def test_label_value_must_match_exactly(ssh: SSHClient, containers: Containers) -> None:
    sandbox = containers.start()
    assert_refused(ssh, sandbox.session_id[:-1], "no sandbox")
    assert_refused(ssh, sandbox.session_id.upper(), "no sandbox")
    assert ssh.run(sandbox.session_id, "echo reached").stdout == b"reached\n"


def test_two_sandboxes_for_one_session_is_an_error(ssh: SSHClient, containers: Containers) -> None:
    session_id = new_session_id("twice")
    containers.start(session_id)
    containers.start(session_id)
    assert_refused(ssh, session_id, "2 containers carry label")
