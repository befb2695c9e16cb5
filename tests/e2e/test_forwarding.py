"""ssh -L, -W, -D, -R and unix-socket forwarding: always dialled or listened inside the sandbox."""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import re
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sandbox_ssh import ForwardingKind

from ..conftest import GatewayFactory
from ..support.containers import Container, Containers
from ..support.netclient import (
    STANDIN_PATH,
    download_digest,
    expected_download_digest,
    free_port,
    install_standin,
    one_shot_server,
    recv_all,
    recv_line,
    socks5_connect,
)
from ..support.ssh import SSHClient
from ..support.wait import wait_until


@dataclass
class StandIn:
    where: str  # port number or socket path inside the sandbox
    token: str


def start_standin(ssh: SSHClient, sandbox: Container, *args: str) -> StandIn:
    install_standin(sandbox)
    token = os.urandom(8).hex()
    command = (
        f"nohup python3 {STANDIN_PATH} --token {token} {' '.join(args)} "
        "> /tmp/standin.out 2>&1 & "
        "while ! grep -q listeningOn /tmp/standin.out; do sleep 0.05; done; "
        "cat /tmp/standin.out"
    )
    result = ssh.run(sandbox.session_id, command)
    match = re.search(rb"listeningOn==(.+)==", result.stdout)
    assert match, result.stdout + result.stderr
    return StandIn(where=match.group(1).decode(), token=token)


@pytest.fixture
def standin(ssh: SSHClient, sandbox: Container) -> StandIn:
    return start_standin(ssh, sandbox)


class LocalForward:
    """`ssh -f -N -L` kept up for a test; -f returns once the forward is listening."""

    def __init__(self, ssh: SSHClient, session_id: str, spec: str, tmp_path: Path) -> None:
        self.port = (
            int(spec.split(":", 1)[0]) if not spec.startswith("127.") else int(spec.split(":")[1])
        )
        self.control = str(tmp_path / f"ctl-{self.port}")
        self.ssh, self.session_id = ssh, session_id
        options = [
            "-f",
            "-N",
            "-L",
            spec,
            "-o",
            "ExitOnForwardFailure=yes",
            "-o",
            "ControlMaster=yes",
            "-o",
            f"ControlPath={self.control}",
        ]
        result = ssh.run(session_id, options=options)
        assert result.returncode == 0, result.stderr

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=30)

    def close(self) -> None:
        self.ssh.run(self.session_id, options=["-o", f"ControlPath={self.control}", "-O", "exit"])


@pytest.fixture
def local_forward(
    ssh: SSHClient, sandbox: Container, standin: StandIn, tmp_path: Path
) -> Iterator[LocalForward]:
    forward = LocalForward(
        ssh, sandbox.session_id, f"{free_port()}:127.0.0.1:{standin.where}", tmp_path
    )
    yield forward
    forward.close()


def test_local_forward_carries_data_both_ways_and_half_close(
    local_forward: LocalForward, standin: StandIn
) -> None:
    with local_forward.connect() as conn:
        assert recv_line(conn) == f"token=={standin.token}==\n".encode()
        conn.sendall(b"echo\nhello through the sandbox\n")
        conn.shutdown(socket.SHUT_WR)  # half-close: the reply still comes back
        assert recv_all(conn) == b"hello through the sandbox\n"


def test_server_first_bytes_are_never_lost(local_forward: LocalForward, standin: StandIn) -> None:
    for _ in range(40):
        with local_forward.connect() as conn:
            assert recv_line(conn) == f"token=={standin.token}==\n".encode()


def test_64_forwarded_connections_at_once(local_forward: LocalForward, standin: StandIn) -> None:
    barrier = threading.Barrier(64, timeout=60)

    def one(index: int) -> bytes:
        with local_forward.connect() as conn:
            recv_line(conn)
            barrier.wait()  # all 64 are open together
            conn.sendall(b"echo\n" + f"conn-{index}".encode())
            conn.shutdown(socket.SHUT_WR)
            return recv_all(conn)

    with concurrent.futures.ThreadPoolExecutor(64) as pool:
        results = list(pool.map(one, range(64)))
    assert results == [f"conn-{i}".encode() for i in range(64)]


def test_100mb_through_one_forward_each_way(local_forward: LocalForward) -> None:
    size = 100 * 1024 * 1024
    with local_forward.connect() as conn:
        recv_line(conn)
        assert download_digest(conn, size, seed=7) == expected_download_digest(size, seed=7)
    with local_forward.connect() as conn:
        recv_line(conn)
        conn.sendall(b"upload\n")
        digest = hashlib.sha256()
        block = os.urandom(1 << 20)
        for _ in range(100):
            conn.sendall(block)
            digest.update(block)
        conn.shutdown(socket.SHUT_WR)
        assert recv_line(conn).strip().decode() == digest.hexdigest()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_stdio_forward_reaches_the_sandbox_loopback(
    ssh: SSHClient, sandbox: Container, standin: StandIn, host: str
) -> None:
    result = ssh.run(
        sandbox.session_id, options=["-W", f"{host}:{standin.where}"], input=b"echo\nvia -W\n"
    )
    assert result.stdout == f"token=={standin.token}==\nvia -W\n".encode()
    assert result.returncode == 0


def test_gateway_host_loopback_is_unreachable(ssh: SSHClient, sandbox: Container) -> None:
    accepted: list[bool] = []
    with socket.socket() as host_service:
        host_service.bind(("127.0.0.1", 0))
        host_service.listen()
        host_service.settimeout(0.5)
        port = host_service.getsockname()[1]
        result = ssh.run(sandbox.session_id, options=["-W", f"127.0.0.1:{port}"], input=b"x")
        try:
            host_service.accept()[0].close()
            accepted.append(True)
        except TimeoutError:
            pass
    assert result.returncode == 255
    assert b"Connection refused" in result.stderr or b"forwarding failed" in result.stderr
    assert not accepted, "the gateway dialled its own loopback"


def test_forwarding_needs_no_socat_or_nc_in_the_image(
    ssh: SSHClient, containers: Containers
) -> None:
    sandbox = containers.start()
    sandbox.exec("sh", "-c", "rm -f /usr/bin/socat /usr/bin/nc /bin/nc /usr/bin/ncat")
    assert ssh.run(sandbox.session_id, "command -v socat nc").stdout == b""
    standin = start_standin(ssh, sandbox)
    result = ssh.run(
        sandbox.session_id, options=["-W", f"127.0.0.1:{standin.where}"], input=b"echo\nok"
    )
    assert result.stdout == f"token=={standin.token}==\nok".encode()


def test_unix_socket_forward(ssh: SSHClient, containers: Containers, tmp_path: Path) -> None:
    sandbox = containers.start(user="dev")
    standin = start_standin(ssh, sandbox, "--unix", "/home/dev/ide.sock")
    port = free_port()
    forward = LocalForward(ssh, sandbox.session_id, f"127.0.0.1:{port}:{standin.where}", tmp_path)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
            assert recv_line(conn) == f"token=={standin.token}==\n".encode()
            conn.sendall(b"echo\nover a unix socket")
            conn.shutdown(socket.SHUT_WR)
            assert recv_all(conn) == b"over a unix socket"
    finally:
        forward.close()


def exchange_over_socket_forward(
    ssh: SSHClient, session_id: str, path: str, payload: bytes, tmp_path: Path
) -> bytes:
    """Send ``payload`` to the sandbox's unix socket ``path`` through ``ssh -L PORT:path``."""
    port = free_port()
    forward = LocalForward(ssh, session_id, f"127.0.0.1:{port}:{path}", tmp_path)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
            conn.sendall(payload)
            try:
                return recv_all(conn)
            except ConnectionResetError:
                return b""
    finally:
        forward.close()


def test_unix_socket_respects_the_sandbox_users_permissions(
    ssh: SSHClient, containers: Containers, tmp_path: Path
) -> None:
    sandbox = containers.start(user="dev")
    sandbox.exec(
        "sh",
        "-c",
        'python3 -c "import socket,os,time; s=socket.socket(socket.AF_UNIX); '
        "s.bind('/run/root-only.sock'); os.chmod('/run/root-only.sock', 0o600); s.listen(); "
        "c, _ = s.accept(); c.sendall(b'root secret')\" >/dev/null 2>&1 &",
    )
    wait_until(lambda: "srw" in sandbox.exec("ls", "-l", "/run/", check=False))
    reply = exchange_over_socket_forward(
        ssh, sandbox.session_id, "/run/root-only.sock", b"x", tmp_path
    )
    assert reply == b""
    # root in the same sandbox may use it: the sandbox's own permissions decide.
    sandbox.exec("chmod", "666", "/run/root-only.sock")
    reply = exchange_over_socket_forward(
        ssh, sandbox.session_id, "/run/root-only.sock", b"x", tmp_path
    )
    assert reply == b"root secret"


def test_symlink_cannot_reach_the_gateway_hosts_docker_socket(
    ssh: SSHClient, sandbox: Container, tmp_path: Path
) -> None:
    """Regression: a link planted in the sandbox is resolved in the sandbox, not on the host."""
    # The engine's own socket on this host: dockerd's, or Podman's under --engine podman.
    engine_socket = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    engine_socket = engine_socket.removeprefix("unix://")
    assert Path(engine_socket).is_socket()
    sandbox.exec(
        "sh",
        "-c",
        f"ln -sf {engine_socket} /tmp/escape.sock && "
        f"ln -sf ../../../..{engine_socket} /tmp/escape-rel.sock",
    )
    request = b"GET /version HTTP/1.0\r\n\r\n"
    for path in (
        "/tmp/escape.sock",
        "/tmp/escape-rel.sock",
        engine_socket,
        f"/proc/1/root{engine_socket}",
        f"/../..{engine_socket}",
    ):
        reply = exchange_over_socket_forward(ssh, sandbox.session_id, path, request, tmp_path)
        assert b"ApiVersion" not in reply, f"{path} reached the host's Docker socket"
        assert reply == b""


def test_remote_forward_listens_inside_the_sandbox(ssh: SSHClient, sandbox: Container) -> None:
    with one_shot_server(b"from the client side\n") as local_port:
        remote_port = free_port()
        probe = (
            "python3 -c \"import socket; s=socket.create_connection(('127.0.0.1', "
            f"{remote_port})); print(s.recv(100).decode(), end='')\""
        )
        result = ssh.run(
            sandbox.session_id, probe, options=["-R", f"{remote_port}:127.0.0.1:{local_port}"]
        )
    assert result.stdout == b"from the client side\n", result.stderr


def test_remote_forward_port_zero_is_allocated_and_reported(
    ssh: SSHClient, sandbox: Container
) -> None:
    with one_shot_server(b"dynamic\n") as local_port:
        process = ssh.popen(
            sandbox.session_id,
            "cat",
            options=["-R", f"0:127.0.0.1:{local_port}"],
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert process.stderr is not None
        line = process.stderr.readline().decode()
        match = re.search(r"Allocated port (\d+) for remote forward", line)
        assert match, line
        allocated = int(match.group(1))
        probe = (
            "python3 -c \"import socket; s=socket.create_connection(('127.0.0.1', "
            f"{allocated})); print(s.recv(100).decode(), end='')\""
        )
        assert ssh.run(sandbox.session_id, probe).stdout == b"dynamic\n"
        process.kill()
        process.wait()
    listening = ssh.run(
        sandbox.session_id, f"ss -ltn 2>/dev/null | grep -c ':{allocated} ' || true"
    )
    assert listening.stdout.strip() in (b"0", b"")


def test_cancel_remote_forward(ssh: SSHClient, sandbox: Container, tmp_path: Path) -> None:
    control = ["-o", f"ControlPath={tmp_path / 'ctl'}"]
    port = free_port()
    up = ssh.run(
        sandbox.session_id,
        options=[*control, "-f", "-N", "-o", "ControlMaster=yes", "-R", f"{port}:127.0.0.1:9"],
    )
    assert up.returncode == 0, up.stderr
    try:
        check = f"python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}))\""
        assert ssh.run(sandbox.session_id, check, options=control).returncode == 0
        cancel = ssh.run(
            sandbox.session_id, options=[*control, "-O", "cancel", "-R", f"{port}:127.0.0.1:9"]
        )
        assert cancel.returncode == 0, cancel.stderr
        after = ssh.run(sandbox.session_id, check, options=control)
        assert after.returncode != 0 and b"ConnectionRefusedError" in after.stderr
    finally:
        ssh.run(sandbox.session_id, options=[*control, "-O", "exit"])


def test_regression_a_remote_forward_was_not_bound_when_the_next_channel_came(
    ssh: SSHClient, sandbox: Container, tmp_path: Path
) -> None:
    # OpenSSH regress/forwarding.sh: `ssh -f -N -M -R B:... -L A:127.0.0.1:B` backgrounds
    # before the -R replies, and a connection to A at once dials B in the sandbox. sshd
    # binds B before it reads the channel open; the gateway bound it later.
    control = ["-o", f"ControlPath={tmp_path / 'ctl'}"]
    local_port, remote_port = free_port(), free_port()
    with one_shot_server(b"through both forwards\n") as origin:
        up = ssh.run(
            sandbox.session_id,
            options=[
                *control,
                "-f",
                "-N",
                "-o",
                "ControlMaster=yes",
                "-R",
                f"{remote_port}:127.0.0.1:{origin}",
                "-L",
                f"{local_port}:127.0.0.1:{remote_port}",
            ],
        )
        assert up.returncode == 0, up.stderr
        try:
            with socket.create_connection(("127.0.0.1", local_port), timeout=10) as conn:
                assert conn.makefile("rb").readline() == b"through both forwards\n"
        finally:
            ssh.run(sandbox.session_id, options=[*control, "-O", "exit"])


def test_remote_unix_socket_forward(ssh: SSHClient, containers: Containers) -> None:
    sandbox = containers.start(user="dev")
    with one_shot_server(b"via socket\n") as local_port:
        probe = (
            "stat -c %U /home/dev/agent.sock; "
            'python3 -c "import socket; s=socket.socket(socket.AF_UNIX); '
            "s.connect('/home/dev/agent.sock'); print(s.recv(100).decode(), end='')\""
        )
        result = ssh.run(
            sandbox.session_id,
            probe,
            options=["-R", f"/home/dev/agent.sock:127.0.0.1:{local_port}"],
        )
    assert result.stdout == b"dev\nvia socket\n", result.stderr
    wait_until(
        lambda: "agent.sock" not in sandbox.exec("ls", "/home/dev"),
        message="the socket file outlived the connection",
    )


@pytest.mark.parametrize("disabled", [frozenset(ForwardingKind), frozenset({ForwardingKind.LOCAL})])
def test_disabled_forwarding_is_administratively_prohibited(
    gateway_factory: GatewayFactory, containers: Containers, disabled: frozenset[ForwardingKind]
) -> None:
    gw = gateway_factory(disabled_forwarding=disabled)
    sandbox = containers.start()
    result = gw.client.run(sandbox.session_id, options=["-v", "-W", "127.0.0.1:22"], timeout=30)
    assert result.returncode == 255
    assert b"administratively prohibited" in result.stderr
    assert b"local forwarding is disabled on this gateway" in result.stderr
    # The connection itself still works for commands.
    assert gw.client.run(sandbox.session_id, "echo fine").stdout == b"fine\n"


@pytest.mark.parametrize("hosts", ["", "192.0.2.1 other\n"])
def test_localhost_forwards_work_without_an_etc_hosts_entry(
    ssh: SSHClient, containers: Containers, tmp_path: Path, hosts: str
) -> None:
    """A peer's users hit this: a sandbox whose /etc/hosts has no localhost line (Docker
    always mounts one, so "no file at all" is the empty one here)."""
    hosts_file = tmp_path / "hosts"
    hosts_file.write_text(hosts)
    sandbox = containers.start(extra=["-v", f"{hosts_file}:/etc/hosts:ro"])
    assert "localhost" not in sandbox.exec("cat", "/etc/hosts")
    standin = start_standin(ssh, sandbox)
    forward = LocalForward(
        ssh, sandbox.session_id, f"{free_port()}:localhost:{standin.where}", tmp_path
    )
    try:
        with forward.connect() as conn:
            assert recv_line(conn) == f"token=={standin.token}==\n".encode()
    finally:
        forward.close()
    socks_port = free_port()
    tunnel = ssh.popen(
        sandbox.session_id,
        options=["-N", "-D", str(socks_port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: socket.socket().connect_ex(("127.0.0.1", socks_port)) == 0)
        with socks5_connect(socks_port, "localhost", int(standin.where)) as conn:
            assert recv_line(conn) == f"token=={standin.token}==\n".encode()
    finally:
        tunnel.terminate()
        tunnel.wait()
