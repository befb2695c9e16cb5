"""`sandbox-ssh serve` as an operator runs it."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..support.containers import Containers, new_session_id
from ..support.gateway import CliGateway, serve_once
from ..support.netclient import free_port
from ..support.ssh import SSHClient
from ..support.system import ensure_commands
from ..support.wait import wait_until


@contextlib.contextmanager
def serving(tmp_path: Path, *args: str) -> Iterator[tuple[CliGateway, SSHClient]]:
    with CliGateway(tmp_path / "state" / "keys" / "host_key", *args) as gateway:
        yield (
            gateway,
            SSHClient(gateway.host, gateway.port, gateway.host_key_path, tmp_path / "client"),
        )


def test_serve_runs_commands_and_logs_each_connection(
    tmp_path: Path, containers: Containers, client_tools: None
) -> None:
    with serving(tmp_path) as (gateway, ssh):
        sandbox = containers.start()
        result = ssh.run(sandbox.session_id, "echo via-cli")
        assert result.stdout == b"via-cli\n"
        ssh.run("missing-session", "true")
        log = gateway.wait_for_log(lambda text: text.count("connection closed") >= 2)
        opened = re.search(
            rf"connection opened: session={sandbox.session_id} remote=127\.0\.0\.1:\d+", log
        )
        assert opened, log
        assert re.search(
            rf"connection closed: session={sandbox.session_id} remote=127\.0\.0\.1:\d+ "
            r"duration=\d+\.\d+s end=\w+",
            log,
        ), log
        assert re.search(
            r'connection closed: session=- .* end=rejected: session "missing-session"', log
        )
        assert gateway.terminate() == 0


def test_defaults_are_loopback_and_a_key_in_the_state_directory(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "sandbox_ssh", "serve"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "XDG_STATE_HOME": str(tmp_path)},
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        while line and "listening on" not in line:
            line = process.stderr.readline()
        assert "listening on 127.0.0.1:2222" in line
        key = tmp_path / "sandbox-ssh" / "ssh_host_ed25519_key"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    finally:
        process.terminate()
        assert process.wait(20) == 0


def test_help_documents_every_option() -> None:
    help_text = serve_once("--help").stdout
    help_text = " ".join(help_text.split())
    assert "[default: 127.0.0.1:2222]" in help_text
    for option in (
        "--listen",
        "--host-key",
        "--docker-host",
        "--session-label",
        "--auto-start / --no-auto-start",
        "--log-level",
    ):
        assert option in help_text


def test_no_auto_start_refuses_a_stopped_sandbox(
    tmp_path: Path, containers: Containers, client_tools: None
) -> None:
    with serving(tmp_path, "--no-auto-start") as (_gateway, ssh):
        sandbox = containers.start(running=False)
        result = ssh.run(sandbox.session_id, "true")
        assert result.returncode == 255
        assert b"the sandbox is stopped" in result.stderr
        assert sandbox.state()["Running"] is False


def test_custom_session_label(tmp_path: Path, containers: Containers, client_tools: None) -> None:
    with serving(tmp_path, "--session-label", "example.com/sandbox") as (_gateway, ssh):
        session_id = new_session_id()
        containers.start(labelled=False, labels={"example.com/sandbox": session_id})
        result = ssh.run(session_id, "echo found")
        assert result.stdout == b"found\n", result.stderr


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_ends_live_sessions_and_exits_cleanly(
    tmp_path: Path, containers: Containers, client_tools: None, stop_signal: signal.Signals
) -> None:
    with serving(tmp_path) as (gateway, ssh):
        sandbox = containers.start()
        client = ssh.popen(
            sandbox.session_id,
            "echo up; sleep 1007",
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        assert client.stdout is not None
        assert client.stdout.readline() == b"up\n"
        assert gateway.terminate(stop_signal) == 0
        assert client.wait(20) == 255
        assert "sleep 1007" not in sandbox.processes()
        assert "end=server stopped" in gateway.log_text()


def test_host_key_is_created_private_and_reused(
    tmp_path: Path, containers: Containers, client_tools: None
) -> None:
    with serving(tmp_path) as (gateway, _):
        key = gateway.host_key_path
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    first = key.read_bytes()
    fingerprint = subprocess.run(["ssh-keygen", "-lf", str(key)], capture_output=True).stdout
    assert b"ED25519" in fingerprint

    with serving(tmp_path) as (_again, ssh):
        assert key.read_bytes() == first
        sandbox = containers.start()
        # The client trusts only the key written on first start.
        assert ssh.run(sandbox.session_id, "true").returncode == 0


def test_corrupt_host_key_is_a_clear_error_and_left_alone(tmp_path: Path) -> None:
    key = tmp_path / "host_key"
    key.write_bytes(b"this is not a key\n")
    key.chmod(0o600)
    result = serve_once("--listen", "127.0.0.1:0", "--host-key", str(key))
    assert result.returncode != 0
    assert f"host key {key} cannot be used" in result.stderr
    assert "Traceback" not in result.stderr
    assert key.read_bytes() == b"this is not a key\n"


def test_unreadable_host_key_is_a_clear_error(tmp_path: Path) -> None:
    key = tmp_path / "host_key"
    key.symlink_to(tmp_path / "missing-target")  # present but unreadable: never replaced
    result = serve_once("--listen", "127.0.0.1:0", "--host-key", str(key))
    assert result.returncode != 0
    assert f"host key {key} cannot be used" in result.stderr
    assert "Traceback" not in result.stderr
    assert key.is_symlink() and not (tmp_path / "missing-target").exists()


def test_bad_listen_address_is_a_usage_error() -> None:
    result = serve_once("--listen", "nonsense")
    assert result.returncode == 2
    assert "is not HOST:PORT" in result.stderr


def test_no_forwarding_flag_prohibits_forwarding(
    tmp_path: Path, containers: Containers, client_tools: None
) -> None:
    with serving(tmp_path, "--no-forwarding") as (_gateway, ssh):
        sandbox = containers.start()
        result = ssh.run(sandbox.session_id, options=["-W", "127.0.0.1:22"])
        assert result.returncode == 255
        assert b"administratively prohibited" in result.stderr
        remote = ssh.run(sandbox.session_id, "echo ran", options=["-R", "0:127.0.0.1:9"])
        assert remote.stdout == b"ran\n"
        assert b"remote port forwarding failed" in remote.stderr


def test_disable_one_forwarding_kind(
    tmp_path: Path, containers: Containers, client_tools: None
) -> None:
    with serving(tmp_path, "--disable-forwarding", "remote") as (_gateway, ssh):
        sandbox = containers.start()
        remote = ssh.run(sandbox.session_id, "echo ran", options=["-R", "0:127.0.0.1:9"])
        assert b"remote port forwarding failed" in remote.stderr
        local = ssh.run(sandbox.session_id, options=["-W", "127.0.0.1:1"])
        assert b"administratively prohibited" not in local.stderr  # local still allowed


def test_remote_docker_host_says_why_forwarding_and_the_runtime_path_are_unavailable(
    tmp_path: Path, containers: Containers, client_tools: None
) -> None:
    """Through a TCP Docker endpoint the gateway cannot enter the sandbox's namespaces."""
    ensure_commands("socat")
    port = free_port()
    bridge = subprocess.Popen(
        [
            "socat",
            f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork",
            "UNIX-CONNECT:/var/run/docker.sock",
        ]
    )
    try:
        wait_until(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0)
        docker_host = f"tcp://127.0.0.1:{port}"
        refusal = serve_once("--docker-host", docker_host, "--exec-path", "runtime")
        assert refusal.returncode == 1
        said = [line for line in refusal.stderr.splitlines() if " py.warnings: " not in line]
        assert said == [
            "Error: --exec-path runtime is unavailable: "
            "the runtime path needs Docker's local unix socket"
        ]
        options = ("--docker-host", docker_host, "--exec-path", "auto")
        with serving(tmp_path, *options) as (gateway, ssh):
            log = gateway.wait_for_log(lambda text: "forwarding is unavailable" in text)
            assert "forwarding needs the gateway on the Docker host" in log
            assert (
                "exec path: api, because the runtime path is unavailable: "
                "the runtime path needs Docker's local unix socket" in log
            )
            sandbox = containers.start()
            assert ssh.run(sandbox.session_id, "echo works").stdout == b"works\n"
            refused = ssh.run(sandbox.session_id, options=["-v", "-W", "127.0.0.1:22"])
            assert b"administratively prohibited" in refused.stderr
            assert b"forwarding needs the gateway on the Docker host" in refused.stderr
    finally:
        bridge.terminate()
        bridge.wait()


def test_idle_stop_accept_env_and_user_fallback_flags(
    tmp_path: Path, containers: Containers, client_tools: None
) -> None:
    with serving(
        tmp_path, "--idle-stop", "1s", "--accept-env", "LANG", "--user-fallback", "root"
    ) as (gateway, ssh):
        sandbox = containers.start()
        result = ssh.run(
            sandbox.session_id,
            'echo "$LANG|${FOO-unset}"',
            options=["-o", "SetEnv=LANG=C.UTF-8 FOO=bar"],
        )
        assert result.stdout == b"C.UTF-8|unset\n"
        wait_until(
            lambda: sandbox.state()["Running"] is False,
            timeout=30,
            message="--idle-stop did not stop the sandbox",
        )
        gateway.wait_for_log(lambda text: "idle for 1s: stopping its sandbox" in text)
        assert ssh.run(sandbox.session_id, "echo again").stdout == b"again\n"


def test_workers_share_the_port_and_stop_together(
    tmp_path: Path, containers: Containers, client_tools: None
) -> None:
    with serving(tmp_path, "--workers", "2") as (gateway, ssh):
        gateway.wait_for_log(lambda text: text.count("listening on") == 2)
        sandbox = containers.start()
        for index in range(6):
            assert ssh.run(sandbox.session_id, f"echo {index}").stdout == f"{index}\n".encode()
        workers = re.search(r"started 2 workers: (\d+) (\d+)", gateway.log_text())
        assert workers, gateway.log_text()
        assert gateway.terminate() == 0
    for pid in workers.groups():
        assert not Path(f"/proc/{pid}").exists()
