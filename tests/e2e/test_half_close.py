"""Forwarded connections closed in every order: each run ends within 2 s with every byte.

Regression for: `ssh -W localhost:7001 SESSION@gateway </dev/null` hung in about 5 runs of 6
when the service wrote a line and closed (asyncssh's SSHForwarder lost the close; see
docs/upstream/asyncssh-forwarder-half-close.md). Every forwarding kind is driven 50 times in
a row per order: the client's EOF first, the service's close first with the client still
sending, and a client that half-closes and then reads a long reply.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ..support import halfclose
from ..support.containers import Container, docker
from ..support.netclient import free_port
from ..support.ssh import SSHClient
from ..support.wait import wait_until

# Every run within DEADLINE: measured with nothing else on the machine.
pytestmark = pytest.mark.serial

RUNS = 50
DEADLINE = 2.0
SCRIPT = Path(halfclose.__file__)
IN_SANDBOX = "/usr/local/lib/sandbox-ssh-halfclose.py"
MODES = ("banner", "early", "reply")
TCP_PORTS = {"banner": 7001, "early": 7002, "reply": 7003}


def unix_path(mode: str) -> str:
    return f"/tmp/halfclose-{mode}.sock"


@pytest.fixture
def services(sandbox: Container) -> Container:
    """The three services inside the sandbox, on TCP and on unix sockets."""
    source = SCRIPT.read_bytes()
    docker("exec", "-i", "-u", "0", sandbox.id, "sh", "-c", f"cat > {IN_SANDBOX}", input=source)
    for mode in MODES:
        for name, where in (
            ("tcp", f"--tcp {TCP_PORTS[mode]}"),
            ("unix", f"--unix {unix_path(mode)}"),
        ):
            out, log = f"/tmp/svc-{mode}-{name}.out", f"/tmp/svc-{mode}-{name}.log"
            command = f"python3 {IN_SANDBOX} serve {where} --mode {mode} --log {log} > {out} 2>&1"
            docker("exec", "-d", sandbox.id, "sh", "-c", command)

            def listening(out: str = out) -> bool:
                return "listening" in sandbox.exec("cat", out, check=False)

            wait_until(listening)
    return sandbox


class Mux:
    """One master connection; each `ssh -W` run is a new channel on it."""

    def __init__(self, ssh: SSHClient, session_id: str, control: Path, *forwards: str) -> None:
        self.ssh, self.session_id = ssh, session_id
        self.control = ["-o", f"ControlPath={control}"]
        options = [*self.control, "-f", "-N", "-o", "ControlMaster=yes"]
        options += ["-o", "ExitOnForwardFailure=yes", *forwards]
        result = ssh.run(session_id, options=options)
        assert result.returncode == 0, result.stderr

    def argv(self, *options: str) -> list[str]:
        return self.ssh.ssh_argv(self.session_id, options=[*self.control, *options])

    def close(self) -> None:
        self.ssh.run(self.session_id, options=[*self.control, "-O", "exit"])


OpenMux = Callable[..., Mux]


@pytest.fixture
def mux_factory(ssh: SSHClient, services: Container, tmp_path: Path) -> Iterator[OpenMux]:
    """Opens master connections (with the given forwards) that are closed after the test."""
    opened: list[Mux] = []

    def open_mux(*forwards: str) -> Mux:
        control = tmp_path / f"mux-{len(opened)}"
        opened.append(Mux(ssh, services.session_id, control, *forwards))
        return opened[-1]

    yield open_mux
    for mux in opened:
        mux.close()


def assert_runs(lines: list[str], runs: int = RUNS) -> None:
    results = [json.loads(line) for line in lines if line.strip()]
    assert len(results) == runs, lines
    failed = [r for r in results if not r["ok"] or r["seconds"] > DEADLINE]
    assert not failed, failed[:3]


def local_clients(mode: str, *where: str, runs: int = RUNS) -> list[str]:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "client", *where, "--mode", mode, "--runs", str(runs)],
        capture_output=True,
        text=True,
        timeout=runs * DEADLINE + 30,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def service_log(sandbox: Container, mode: str, name: str) -> list[str]:
    return sandbox.exec("cat", f"/tmp/svc-{mode}-{name}.log", check=False).splitlines()


UPLOAD_RECORD = f"{len(halfclose.UPLOAD)} {hashlib.sha256(halfclose.UPLOAD).hexdigest()}"


# direct-tcpip: ssh -W, as the report had it, and ssh -L for a local client.


def test_direct_tcpip_client_eof_first(ssh: SSHClient, services: Container) -> None:
    # A new connection per run, as the report had it (a multiplexed -W hides the hang).
    for _ in range(RUNS):
        started = time.monotonic()
        result = subprocess.run(
            ssh.ssh_argv(services.session_id, options=["-W", f"localhost:{TCP_PORTS['banner']}"]),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=DEADLINE + 5,
        )
        assert (result.returncode, result.stdout) == (0, halfclose.BANNER), result.stderr
        assert time.monotonic() - started < DEADLINE


def test_direct_tcpip_service_closes_first_while_the_client_sends(
    ssh: SSHClient, services: Container
) -> None:
    for _ in range(RUNS):
        started = time.monotonic()
        client = subprocess.Popen(
            ssh.ssh_argv(services.session_id, options=["-W", f"localhost:{TCP_PORTS['early']}"]),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert client.stdin is not None and client.stdout is not None

        def send(stdin: object = client.stdin) -> None:
            try:
                stdin.write(halfclose.UPLOAD)  # type: ignore[attr-defined]
                stdin.close()  # type: ignore[attr-defined]
            except BrokenPipeError:
                pass

        sender = threading.Thread(target=send)
        sender.start()
        output = client.stdout.read()
        sender.join()
        assert client.wait(DEADLINE + 5) == 0, client.stderr.read() if client.stderr else ""
        assert output == halfclose.EARLY
        assert time.monotonic() - started < DEADLINE
    # OpenSSH's -W ends the channel at the service's EOF, so what the client still had to
    # send is not sent (sshd in the same image: 0 bytes arrive); -L below carries it all.


@pytest.mark.parametrize("mode", MODES)
def test_direct_tcpip_in_every_order_with_a_local_client(
    mux_factory: OpenMux, services: Container, mode: str
) -> None:
    port = free_port()
    mux_factory("-L", f"{port}:127.0.0.1:{TCP_PORTS[mode]}")
    assert_runs(local_clients(mode, "--tcp", str(port)))
    if mode == "early":
        wait_until(lambda: len(service_log(services, "early", "tcp")) == RUNS)
        assert set(service_log(services, "early", "tcp")) == {UPLOAD_RECORD}


# direct-streamlocal: ssh -L PORT:/path.sock (OpenSSH 9.2 cannot send -W to a path).


@pytest.mark.parametrize("mode", MODES)
def test_direct_streamlocal_in_every_order(
    mux_factory: OpenMux, services: Container, mode: str
) -> None:
    port = free_port()
    mux_factory("-L", f"{port}:{unix_path(mode)}")
    assert_runs(local_clients(mode, "--tcp", str(port)))
    if mode == "early":
        wait_until(lambda: len(service_log(services, "early", "unix")) == RUNS)
        assert set(service_log(services, "early", "unix")) == {UPLOAD_RECORD}


# tcpip-forward and streamlocal-forward: the client runs in the sandbox, the service here.


@pytest.fixture
def local_services(tmp_path: Path) -> Iterator[dict[str, tuple[int, Path]]]:
    started: dict[str, tuple[int, Path]] = {}
    processes = []
    for mode in MODES:
        port, log = free_port(), tmp_path / f"local-{mode}.log"
        process = subprocess.Popen(
            [sys.executable, str(SCRIPT), "serve", "--tcp", str(port), "--mode", mode,
             "--log", str(log)],
            stdout=subprocess.PIPE,
        )  # fmt: skip
        assert process.stdout is not None and process.stdout.readline() == b"listening\n"
        processes.append(process)
        started[mode] = (port, log)
    yield started
    for process in processes:
        process.kill()
        process.wait()


def sandbox_clients(sandbox: Container, mode: str, *where: str) -> list[str]:
    argv = ["python3", IN_SANDBOX, "client", *where, "--mode", mode, "--runs", str(RUNS)]
    return sandbox.exec(*argv).splitlines()


@pytest.mark.parametrize("kind", ["tcp", "unix"])
@pytest.mark.parametrize("mode", MODES)
def test_remote_forward_in_every_order(
    mux_factory: OpenMux,
    services: Container,
    local_services: dict[str, tuple[int, Path]],
    kind: str,
    mode: str,
) -> None:
    port, log = local_services[mode]
    if kind == "tcp":
        remote = str(free_port() % 20000 + 20000)
        mux_factory("-R", f"{remote}:127.0.0.1:{port}")
        where = ("--tcp", remote)
    else:
        remote = f"/tmp/remote-{mode}.sock"
        mux_factory("-R", f"{remote}:127.0.0.1:{port}")
        where = ("--unix", remote)
    assert_runs(sandbox_clients(services, mode, *where))
    if mode == "early":
        wait_until(lambda: len(log.read_text().splitlines()) == RUNS)
        assert set(log.read_text().splitlines()) == {UPLOAD_RECORD}
