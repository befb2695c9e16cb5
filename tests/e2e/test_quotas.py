"""Per-tenant quotas with the real OpenSSH client, also across `serve --workers 2`.

Each quota refuses with one line the client shows, and the refusal is counted in
sandbox_ssh_refusals_total by quota name (never by tenant).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from sandbox_ssh._session.tokens import mint_token

from ..support.containers import Container, Containers
from ..support.gateway import CliGateway
from ..support.hookserver import TOKEN as HOOK_TOKEN
from ..support.hookserver import HookServer
from ..support.netclient import free_port
from ..support.ssh import SSHClient
from ..support.wait import wait_until
from .test_operability import http_get, sample

# Authentication and quotas happen before any process starts: the API path adds nothing.
pytestmark = pytest.mark.path_independent


@contextmanager
def quota_gateway(tmp_path: Path, workers: int, *args: str) -> Iterator[tuple[CliGateway, int]]:
    metrics = free_port()
    argv = ["--listen", f"127.0.0.1:{free_port()}", "--metrics-listen", f"127.0.0.1:{metrics}"]
    if workers > 1:
        argv += ["--workers", str(workers)]
    gateway = CliGateway(tmp_path / "host_key", *argv, *args)
    try:
        yield gateway, metrics
    finally:
        assert gateway.terminate() == 0


def refusals(metrics_port: int, quota: str) -> float:
    text = http_get(metrics_port, "/metrics")[1]
    assert "acme" not in text and "tenant=" not in text  # never by tenant
    return sample(text, "sandbox_ssh_refusals_total", limit=f"quota_{quota}")


def one_line(result: subprocess.CompletedProcess[bytes], reason: str) -> None:
    stderr = result.stderr.decode()
    assert result.returncode == 255, result
    assert len([line for line in stderr.splitlines() if reason in line]) == 1, stderr
    assert "Traceback" not in stderr


@contextmanager
def holding(ssh: SSHClient, gateway: CliGateway, session_ids: list[str]) -> Iterator[None]:
    """One connection per session ID, each with a session channel open, until the block ends."""
    clients = [
        ssh.popen(session, "echo up; exec sleep 60", stdout=subprocess.PIPE)
        for session in session_ids
    ]
    try:
        for client in clients:
            assert client.stdout is not None
            assert client.stdout.readline() == b"up\n"
        yield
    finally:
        for client in clients:
            client.kill()
            client.wait()


@pytest.mark.parametrize("workers", [1, 2])
def test_live_connections_per_tenant(
    tmp_path: Path, containers: Containers, client_tools: None, workers: int
) -> None:
    sandbox, other = containers.start(), containers.start()
    with quota_gateway(tmp_path, workers, "--quota-connections", "2") as (gateway, metrics):
        ssh = SSHClient(gateway.host, gateway.port, gateway.host_key_path, tmp_path / "c")
        with holding(ssh, gateway, [sandbox.session_id] * 2):
            one_line(
                ssh.run(sandbox.session_id, "true"),
                "tenant quota: at most 2 live connections at once",
            )
            assert ssh.run(other.session_id, "echo other").stdout == b"other\n"
            wait_until(lambda: refusals(metrics, "connections") == 1)
        # Given back when they end, whichever worker held them.
        wait_until(lambda: ssh.run(sandbox.session_id, "true").returncode == 0)


@pytest.mark.parametrize("workers", [1, 2])
def test_open_channels_per_tenant(
    tmp_path: Path, containers: Containers, client_tools: None, workers: int
) -> None:
    sandbox = containers.start()
    with quota_gateway(tmp_path, workers, "--quota-channels", "2") as (gateway, metrics):
        ssh = SSHClient(gateway.host, gateway.port, gateway.host_key_path, tmp_path / "c")
        with holding(ssh, gateway, [sandbox.session_id] * 2):
            refused = ssh.run(sandbox.session_id, "true")
            one_line(refused, "tenant quota: at most 2 open channels at once")
            forward = ssh.run(
                sandbox.session_id,
                "-N",
                "-W",
                "127.0.0.1:9",
                options=["-o", "ExitOnForwardFailure=yes"],
            )
            one_line(forward, "tenant quota: at most 2 open channels at once")
            wait_until(lambda: refusals(metrics, "channels") == 2)
        wait_until(lambda: ssh.run(sandbox.session_id, "true").returncode == 0)


def _starts_in_one_minute(
    ssh: SSHClient, session: str, count: int
) -> list[subprocess.CompletedProcess[bytes]]:
    """``count`` starts within one clock minute (tried again if they spanned two)."""
    for _ in range(2):
        minute = time.time() // 60
        results = [ssh.run(session, "true") for _ in range(count)]
        if time.time() // 60 == minute:
            return results
    raise AssertionError("could not stay within one clock minute")


@pytest.mark.parametrize("workers", [1, 2])
def test_process_starts_per_minute_per_tenant(
    tmp_path: Path, containers: Containers, client_tools: None, workers: int
) -> None:
    sandbox, other = containers.start(), containers.start()
    with quota_gateway(tmp_path, workers, "--quota-starts-per-minute", "3") as (gateway, metrics):
        ssh = SSHClient(gateway.host, gateway.port, gateway.host_key_path, tmp_path / "c")
        results = _starts_in_one_minute(ssh, sandbox.session_id, 4)
        assert [result.returncode for result in results[:3]] == [0, 0, 0]
        one_line(results[3], "sandbox-ssh: tenant quota: at most 3 process starts a minute")
        assert ssh.run(other.session_id, "echo other").stdout == b"other\n"
        assert refusals(metrics, "starts_per_minute") >= 1


@pytest.mark.parametrize("workers", [1, 2])
def test_bytes_per_hour_each_way_per_tenant(
    tmp_path: Path, containers: Containers, client_tools: None, workers: int
) -> None:
    sandbox, uploader, other = containers.start(), containers.start(), containers.start()
    args = ["--quota-bytes-out-per-hour", "4M", "--quota-bytes-in-per-hour", "4M"]
    with quota_gateway(tmp_path, workers, *args) as (gateway, metrics):
        ssh = SSHClient(gateway.host, gateway.port, gateway.host_key_path, tmp_path / "c")
        # A download that does not stop is cut within about a second of passing the quota.
        flood = ssh.run(sandbox.session_id, "cat /dev/zero", timeout=60)
        one_line(flood, "tenant quota: at most 4 MiB an hour to clients")
        # Then the tenant's new connections are refused until the hour ends.
        one_line(ssh.run(sandbox.session_id, "true"), "at most 4 MiB an hour to clients")
        with open("/dev/zero", "rb") as endless:  # an upload that does not stop
            upload = subprocess.run(
                ssh.ssh_argv(uploader.session_id, "cat >/dev/null"),
                stdin=endless,
                capture_output=True,
                timeout=60,
            )
        one_line(upload, "tenant quota: at most 4 MiB an hour from clients")
        assert ssh.run(other.session_id, "echo other").stdout == b"other\n"
        assert refusals(metrics, "bytes_out_per_hour") >= 2
        assert refusals(metrics, "bytes_in_per_hour") >= 1


def test_a_hook_names_the_tenant_and_gives_its_quotas(
    tmp_path: Path, hook_server: HookServer, containers: Containers, client_tools: None
) -> None:
    first, second, third = containers.start(), containers.start(), containers.start()
    hook_server.user_extra = {
        first.session_id: {"tenant": "acme", "quotas": {"connections": 1}},
        second.session_id: {"tenant": "acme", "quotas": {"connections": 1}},
    }
    token_file = tmp_path / "hook-token"
    token_file.write_text(HOOK_TOKEN + "\n")
    args = ["--user-info-url", hook_server.url("user"), "--hook-token-file", str(token_file)]
    with quota_gateway(tmp_path, 1, *args) as (gateway, metrics):
        ssh = SSHClient(gateway.host, gateway.port, gateway.host_key_path, tmp_path / "c")
        with holding(ssh, gateway, [first.session_id]):
            # Another session of the same tenant: over the tenant's quota of 1.
            one_line(ssh.run(second.session_id, "true"), "at most 1 live connections at once")
            # A session the hook names no tenant for is its own tenant, without quotas.
            assert ssh.run(third.session_id, "echo third").stdout == b"third\n"
        assert refusals(metrics, "connections") == 1


def test_a_hook_answering_malformed_quotas_refuses_in_one_line(
    tmp_path: Path, hook_server: HookServer, containers: Containers, client_tools: None
) -> None:
    sandbox: Container = containers.start()
    hook_server.user_extra = {sandbox.session_id: {"quotas": {"connections": "many"}}}
    token_file = tmp_path / "hook-token"
    token_file.write_text(HOOK_TOKEN + "\n")
    args = ["--user-info-url", hook_server.url("user"), "--hook-token-file", str(token_file)]
    with quota_gateway(tmp_path, 1, *args) as (gateway, _):
        ssh = SSHClient(gateway.host, gateway.port, gateway.host_key_path, tmp_path / "c")
        one_line(ssh.run(sandbox.session_id, "true"), "malformed quotas")


def test_the_track_hook_refuses_for_quotas_kept_by_the_platform(
    tmp_path: Path, hook_server: HookServer, containers: Containers, client_tools: None
) -> None:
    allowed, refused = containers.start(), containers.start()
    hook_server.behaviour[refused.session_id] = "track:403"
    token_file = tmp_path / "hook-token"
    token_file.write_text(HOOK_TOKEN + "\n")
    key_file = tmp_path / "token.key"
    key_file.write_bytes(b"k" * 32 + b"\n")
    user_key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(user_key)], check=True)
    keys = tmp_path / "authorized"
    keys.mkdir()
    for sandbox in (allowed, refused):
        (keys / sandbox.session_id).write_text(Path(f"{user_key}.pub").read_text())
    args = [
        "--track-url",
        hook_server.url("track"),
        "--track-refuses",
        "--hook-token-file",
        str(token_file),
        "--auth",
        "publickey,token",
        "--token-key-file",
        str(key_file),
        "--authorized-keys-dir",
        str(keys),
    ]
    with quota_gateway(tmp_path, 1, *args) as (gateway, metrics):
        ssh = SSHClient(gateway.host, gateway.port, gateway.host_key_path, tmp_path / "c")
        by_key = ["-o", f"IdentityFile={user_key}", "-o", "IdentitiesOnly=yes"]
        token = mint_token(b"k" * 32, refused.session_id, 60)
        for result in (
            ssh.run(refused.session_id, "true", options=by_key),
            ssh.run(f"{refused.session_id}#{token}", "true"),
        ):
            one_line(result, f'session "{refused.session_id}": billing: account suspended')
        assert ssh.run(allowed.session_id, "echo in", options=by_key).stdout == b"in\n"
        scraped = http_get(metrics, "/metrics")[1]
        assert sample(scraped, "sandbox_ssh_refusals_total", limit="admission") == 2

        def events() -> list[str]:
            return [
                call["event"]
                for call in hook_server.hooks("track")
                if call["session_id"] == allowed.session_id
            ]

        wait_until(lambda: events() == ["connect", "disconnect"])
