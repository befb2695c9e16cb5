"""The hooks under concurrency and failure: ensure, user, env and tracking."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import subprocess
import time
from pathlib import Path

import pytest

from sandbox_ssh import IdleStopper, InMemoryConnectionTracker, SandboxEnsurer, UserInfo
from sandbox_ssh.providers.docker import DockerProvider

from ..conftest import GatewayFactory
from ..support.containers import Container, Containers, docker
from ..support.netclient import free_port
from ..support.wait import wait_until


def start_events(container: Container, since: float) -> list[str]:
    out = docker(
        "events",
        "--since",
        f"{since:.3f}",
        "--until",
        f"{time.time():.3f}",
        "--filter",
        f"container={container.id}",
        "--filter",
        "event=start",
        "--format",
        "{{.Action}}",
    )
    return out.split()


@pytest.mark.serial  # a storm: fifty handshakes at once, with nothing else competing
def test_fifty_simultaneous_connections_to_a_stopped_sandbox_start_it_once(
    gateway_factory: GatewayFactory, containers: Containers
) -> None:
    gw = gateway_factory()
    sandbox = containers.start(running=False)
    session_id = sandbox.session_id
    since = time.time() - 0.5
    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        results = list(pool.map(lambda i: gw.client.run(session_id, f"echo {i}"), range(50)))
    assert [r.stdout for r in results] == [f"{i}\n".encode() for i in range(50)]
    assert all(r.returncode == 0 for r in results)
    assert start_events(sandbox, since) == ["start"]


class SlowEnsurer:
    """The Docker ensurer behind a delay, counting how many ensures really ran."""

    def __init__(self, provider: SandboxEnsurer, delay: float) -> None:
        self.provider = provider
        self.delay = delay
        self.calls = 0

    async def ensure_sandbox(self, session_id: str) -> None:
        self.calls += 1
        await asyncio.sleep(self.delay)
        await self.provider.ensure_sandbox(session_id)


def test_ensure_past_the_timeout_is_refused_with_a_reason(
    gateway_factory: GatewayFactory, containers: Containers
) -> None:
    gw = gateway_factory(ensure_timeout=1.0)
    gw.gateway.server.set_sandbox_ensurer(SlowEnsurer(gw.provider, delay=30))
    sandbox = containers.start(running=False)
    started = time.monotonic()
    result = gw.client.run(sandbox.session_id, "true")
    assert result.returncode == 255
    assert (
        f'session "{sandbox.session_id}": the sandbox did not start within 1s'.encode()
        in result.stderr
    )
    assert time.monotonic() - started < 10


def test_slow_ensure_tells_the_client_and_survives_a_leaving_client(
    gateway_factory: GatewayFactory, containers: Containers
) -> None:
    gw = gateway_factory()
    slow = SlowEnsurer(gw.provider, delay=2.0)
    gw.gateway.server.set_sandbox_ensurer(slow)
    sandbox = containers.start(running=False)
    session_id = sandbox.session_id
    since = time.time() - 0.5
    leaving = gw.client.popen(session_id, "true", stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert leaving.stderr is not None
    assert leaving.stderr.readline().decode().strip() == f"starting sandbox {session_id}..."
    leaving.kill()  # the person gives up while the sandbox starts
    leaving.wait()
    staying = gw.client.run(session_id, "echo up")
    assert staying.stdout == b"up\n", staying.stderr
    assert slow.calls == 1  # joined the running ensure instead of starting a second one
    assert start_events(sandbox, since) == ["start"]


class CountingUser:
    def __init__(self) -> None:
        self.calls = 0

    async def get_user_info(self, session_id: str) -> UserInfo:
        self.calls += 1
        return UserInfo("dev", 1000, 1000)


def test_user_is_fetched_once_per_connection_and_used_by_every_channel(
    gateway_factory: GatewayFactory, containers: Containers, tmp_path: Path
) -> None:
    fetcher = CountingUser()
    gw = gateway_factory(user_info_fetcher=fetcher)
    sandbox = containers.start()
    sandbox.exec("sh", "-c", "groupadd -g 2001 builders && usermod -aG builders dev")
    ssh = gw.client
    mux = ["-o", f"ControlPath={tmp_path / 'ctl'}"]
    up = ssh.run(sandbox.session_id, options=[*mux, "-f", "-N", "-o", "ControlMaster=yes"])
    assert up.returncode == 0, up.stderr
    try:
        exec_result = ssh.run(sandbox.session_id, "id -un; id -G", options=mux)
        assert exec_result.stdout == b"dev\n1000 2001\n"
        shell_result = ssh.run(sandbox.session_id, options=mux, input=b"id -u\n")
        assert shell_result.stdout == b"1000\n"
        sftp = subprocess.run(
            [
                "sftp",
                *ssh.options,
                *mux,
                "-P",
                str(ssh.port),
                "-b",
                "-",
                f"{sandbox.session_id}@{ssh.host}",
            ],
            input=b"put /etc/hostname from-sftp\n",
            capture_output=True,
            timeout=60,
        )
        assert sftp.returncode == 0, sftp.stderr
        assert sandbox.exec("stat", "-c", "%U", "/home/dev/from-sftp").strip() == "dev"
        assert fetcher.calls == 1
    finally:
        ssh.run(sandbox.session_id, options=[*mux, "-O", "exit"])


class FailingUser:
    async def get_user_info(self, session_id: str) -> UserInfo:
        raise ConnectionError("directory service unreachable")


def test_failing_user_fetch_refuses_unless_fallback_is_asked_for(
    gateway_factory: GatewayFactory, containers: Containers, caplog: pytest.LogCaptureFixture
) -> None:
    sandbox = containers.start()
    closed = gateway_factory(user_info_fetcher=FailingUser())
    refused = closed.client.run(sandbox.session_id, "id -u")
    assert refused.returncode == 255
    assert b"cannot prepare the session: directory service unreachable" in refused.stderr
    caplog.set_level(logging.WARNING, logger="sandbox_ssh")
    fallback = gateway_factory(user_info_fetcher=FailingUser(), user_fallback_root=True)
    result = fallback.client.run(sandbox.session_id, "id -u")
    assert result.stdout == b"0\n"
    assert any("running as root" in r.getMessage() for r in caplog.records)


SPECIAL_VALUES = {
    "WITH_SPACES": "a b  c",
    "WITH_QUOTES": 'it\'s "quoted"',
    "WITH_DOLLAR": "$HOME ${PATH} $(id)",
    "WITH_BACKSLASH": "C:\\path\\to\\ \\n",
    "WITH_NEWLINE": "line one\nline two\n",
    "WITH_UNICODE": "héllo wörld ✓ 日本",
    "API_TOKEN": "s3cr3t-token-value-do-not-log",
}


class SpecialEnv:
    async def get_env_vars_for_session(self, session_id: str) -> dict[str, str]:
        return dict(SPECIAL_VALUES)


def test_injected_values_arrive_exactly_and_never_reach_a_log(
    gateway_factory: GatewayFactory, containers: Containers, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    gw = gateway_factory(env_var_fetcher=SpecialEnv())
    sandbox = containers.start()
    for name, value in SPECIAL_VALUES.items():
        result = gw.client.run(sandbox.session_id, f"printenv {name}")
        assert result.stdout == value.encode() + b"\n", name
    shell = gw.client.run(sandbox.session_id, input=b"printenv WITH_NEWLINE\n")
    assert shell.stdout == b"line one\nline two\n\n"
    logged = caplog.text
    for value in SPECIAL_VALUES.values():
        assert value not in logged
    assert "s3cr3t" not in logged


def test_accept_env_filters_client_variables_silently(
    gateway_factory: GatewayFactory, containers: Containers
) -> None:
    gw = gateway_factory(accept_env=("LANG", "LC_*"))
    sandbox = containers.start()
    result = gw.client.run(
        sandbox.session_id,
        'echo "$LANG|$LC_TIME|${LD_PRELOAD-unset}|${EVIL-unset}"',
        options=["-o", "SetEnv=LANG=C.UTF-8 LC_TIME=C LD_PRELOAD=/x.so EVIL=1"],
    )
    assert result.stdout == b"C.UTF-8|C|unset|unset\n"
    assert result.returncode == 0 and result.stderr == b""


def test_sftp_only_and_forwarding_only_connections_count_as_active(
    gateway_factory: GatewayFactory, containers: Containers, tmp_path: Path
) -> None:
    tracker = InMemoryConnectionTracker()
    gw = gateway_factory(connection_tracker=tracker)
    sandbox = containers.start()
    session_id = sandbox.session_id
    sftp = subprocess.Popen(
        ["sftp", *gw.client.options, "-P", str(gw.client.port), f"{session_id}@{gw.client.host}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    port = free_port()
    forward = gw.client.popen(
        session_id,
        options=["-N", "-L", f"{port}:127.0.0.1:9"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: tracker.live_connections(session_id) == 2)
    finally:
        for process in (sftp, forward):
            process.kill()
            process.wait()
    wait_until(lambda: tracker.live_connections(session_id) == 0)


def test_idle_stop_stops_the_sandbox_and_the_next_connection_restarts_it(
    gateway_factory: GatewayFactory, containers: Containers, loop_thread: object
) -> None:
    provider = DockerProvider()
    stopper = IdleStopper(provider, idle_after=1.0)
    gw = gateway_factory(connection_tracker=stopper)
    sandbox = containers.start()
    assert gw.client.run(sandbox.session_id, "true").returncode == 0
    # Coming back inside the window cancels the stop.
    holding = gw.client.popen(
        sandbox.session_id, "sleep 600", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_until(lambda: stopper.live_connections(sandbox.session_id) == 1)
        time.sleep(2.0)  # twice the idle window passes with a connection open...
        assert sandbox.state()["Running"] is True  # ...and nothing stops the sandbox
    finally:
        holding.kill()
        holding.wait()
    wait_until(
        lambda: sandbox.state()["Running"] is False,
        timeout=30,
        message="the idle sandbox was not stopped",
    )
    again = gw.client.run(sandbox.session_id, "echo restarted")
    assert again.stdout == b"restarted\n", again.stderr
    stopper.close()
    gw.gateway.loop.run(provider.close())
