"""The runtime exec path: the same process as `docker exec`, minus the daemons in between.

These tests pin what only the runtime path promises (confinement read off the
container's own spec, exit-signal, the host's view of the processes); the rest
of the suite runs on both paths.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import paramiko
import pytest

from ..conftest import Gateway, GatewayFactory
from ..support.containers import Container, Containers, docker
from ..support.gateway import CliGateway
from ..support.ssh import SSHClient
from ..support.wait import wait_until

pytestmark = pytest.mark.runtime_path

# What a process can see of its own confinement; each line must match docker exec's.
PROBE = r"""
grep -E '^(Cap|NoNewPrivs|Seccomp)' /proc/self/status
cat /proc/self/attr/current 2>&1 || true
cat /proc/self/cgroup
id
ulimit -a
"""

SECCOMP_PROFILE = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "syscalls": [{"names": ["chmod", "fchmod", "fchmodat"], "action": "SCMP_ACT_ERRNO"}],
}


@pytest.fixture
def runtime_ssh(gateway_factory: GatewayFactory) -> SSHClient:
    return gateway_factory(exec_path="runtime").client


def _variants(tmp_path: Path) -> dict[str, list[str]]:
    profile = tmp_path / "seccomp.json"
    profile.write_text(json.dumps(SECCOMP_PROFILE))
    return {
        "defaults": [],
        "cap-drop-all": ["--cap-drop", "ALL"],
        "no-new-privileges": ["--security-opt", "no-new-privileges"],
        "read-only": ["--read-only"],
        "user-dev": ["--user", "dev"],
        "pids-and-memory": ["--pids-limit", "64", "--memory", "256m"],
        "custom-seccomp": ["--security-opt", f"seccomp={profile}"],
        "group-add": ["--group-add", "3000", "--user", "dev"],
    }


@pytest.mark.parametrize(
    "variant",
    [
        "defaults",
        "cap-drop-all",
        "no-new-privileges",
        "read-only",
        "user-dev",
        "pids-and-memory",
        "custom-seccomp",
        "group-add",
    ],
)
def test_confinement_equals_docker_exec(
    runtime_ssh: SSHClient, containers: Containers, tmp_path: Path, variant: str
) -> None:
    options = _variants(tmp_path)[variant]
    user = options[options.index("--user") + 1] if "--user" in options else None
    sandbox = containers.start(extra=[o for o in options if o not in ("--user", user)], user=user)
    through_docker = docker("exec", sandbox.id, "/bin/sh", "-c", PROBE)
    result = runtime_ssh.run(sandbox.session_id, f"/bin/sh -c {shlex.quote(PROBE)}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == through_docker
    if variant == "custom-seccomp":
        denied = runtime_ssh.run(sandbox.session_id, "chmod 600 /tmp")
        assert b"Operation not permitted" in denied.stderr


def _pids_current(container: Container) -> int:
    """The container's pids cgroup count, read on the host (cgroup v1 or v2)."""
    init = int(docker("inspect", "-f", "{{.State.Pid}}", container.id))
    for line in Path(f"/proc/{init}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "pids" in controllers.split(","):
            return int(Path(f"/sys/fs/cgroup/pids{path}/pids.current").read_text())
        if controllers == "" and Path(f"/sys/fs/cgroup{path}/pids.current").exists():
            return int(Path(f"/sys/fs/cgroup{path}/pids.current").read_text())
    raise AssertionError("no pids cgroup for the container")


def test_pids_limit_counts_the_gateways_processes(
    runtime_ssh: SSHClient, containers: Containers
) -> None:
    sandbox = containers.start(extra=["--pids-limit", "64"])
    before = _pids_current(sandbox)
    clients = []
    try:
        for _ in range(5):
            client = runtime_ssh.popen(
                sandbox.session_id,
                "echo up; exec sleep 900",
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            clients.append(client)
            assert client.stdout is not None and client.stdout.readline() == b"up\n"
        assert _pids_current(sandbox) >= before + 5
        # Past the limit the sandbox's own rule applies: forks fail, with a reason.
        many = runtime_ssh.run(
            # Builtins only at the end: at the limit, even $(...) cannot fork.
            sandbox.session_id,
            "for i in $(seq 100); do sleep 60 & done; trap '' TERM; kill 0",
        )
        assert b"fork" in many.stderr.lower() or b"resource" in many.stderr.lower()
    finally:
        for client in clients:
            client.kill()
            client.wait()


def test_exit_signal_reaches_openssh_asyncssh_and_paramiko(
    gateway_factory: GatewayFactory, containers: Containers, caplog: pytest.LogCaptureFixture
) -> None:
    gw = gateway_factory(exec_path="runtime")
    sandbox = containers.start()
    # OpenSSH's ssh exits 255 on exit-signal, as it does against sshd.
    assert gw.client.run(sandbox.session_id, "kill -TERM $$").returncode == 255

    async def with_asyncssh() -> asyncssh.SSHCompletedProcess:
        async with asyncssh.connect(
            gw.gateway.host, gw.gateway.port, username=sandbox.session_id, known_hosts=None
        ) as conn:
            return await conn.run("echo partial; kill -SEGV $$")

    completed = gw.gateway.loop.run(with_asyncssh())
    assert completed.stdout == "partial\n"
    assert completed.exit_signal is not None and completed.exit_signal[0] == "SEGV"
    assert completed.exit_status is None or completed.exit_status == -1

    # paramiko hands exit-signal to its debug log and, as with sshd, reports status -1.
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    with caplog.at_level(logging.DEBUG, logger="paramiko"):
        client.connect(
            gw.gateway.host,
            gw.gateway.port,
            username=sandbox.session_id,
            password="",
            look_for_keys=False,
            allow_agent=False,
        )
        try:
            _, stdout, _ = client.exec_command("kill -KILL $$")
            assert stdout.channel.recv_exit_status() == -1
        finally:
            client.close()
    assert any("exit-signal" in record.getMessage() for record in caplog.records)


HUP_RECORDER = (
    "import signal, sys, time\n"
    "def hung_up(*_):\n"
    "    open('/tmp/hup-seen', 'w').write('hup')\n"
    "    sys.exit(1)\n"
    "signal.signal(signal.SIGHUP, hung_up)\n"
    "print('ready-42', flush=True)\n"
    "time.sleep(600)\n"
)


def test_a_tty_session_is_hung_up_by_the_kernel_when_the_client_dies(
    runtime_ssh: SSHClient, sandbox: Container
) -> None:
    # Recorded the same way against sshd in the same image: the terminal's SIGHUP arrives.
    client = runtime_ssh.popen(
        sandbox.session_id,
        f'python3 -c "{HUP_RECORDER}"',
        options=["-tt"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert client.stdout is not None
    while b"ready-42" not in client.stdout.readline():
        pass
    client.kill()
    client.wait()
    wait_until(lambda: sandbox.exec("cat", "/tmp/hup-seen", check=False) == "hup")


# Takes the lowest free terminal until it gets /dev/pts/N, then holds it and records
# any signal that reaches it. Run with docker exec, so it is no session's member.
PTY_GRABBER = r"""
import os, signal, sys, time
wanted = sys.argv[1]
def seen(signum, frame):
    open("/tmp/grabber-signal", "w").write(str(signum))
signal.signal(signal.SIGHUP, seen)
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    master, slave = os.openpty()
    if os.ttyname(slave) == wanted:
        open("/tmp/grabber-pid", "w").write(str(os.getpid()))
        time.sleep(600)
    os.close(master)
    os.close(slave)
"""


def _processes_running(gateway: Gateway) -> float:
    for line in gateway.gateway.server.metrics.exposition().decode().splitlines():
        if line.startswith("sandbox_ssh_processes "):
            return float(line.split()[1])
    raise AssertionError("no sandbox_ssh_processes gauge")


def test_regression_hangup_spares_a_new_terminal_that_reuses_the_old_index(
    gateway_factory: GatewayFactory, sandbox: Container
) -> None:
    # Seen as exit 137 in a new session while 200 others were being hung up: the
    # scan matched the terminal by (device, inode), and a freed pty's index, with
    # its inode number, went to the new session before the scan ran.
    gateway = gateway_factory(exec_path="runtime")
    client = gateway.client.popen(
        sandbox.session_id,
        "tty; exec sleep 600",
        options=["-tt"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert client.stdout is not None
    terminal = client.stdout.readline().decode().strip()
    assert terminal.startswith("/dev/pts/"), terminal
    docker("exec", "-d", sandbox.id, "python3", "-c", PTY_GRABBER, terminal)
    client.kill()
    client.wait()
    grabber = wait_until(lambda: sandbox.exec("cat", "/tmp/grabber-pid", check=False), timeout=60)
    wait_until(lambda: _processes_running(gateway) == 0)
    assert sandbox.exec("cat", "/tmp/grabber-signal", check=False) == ""
    assert sandbox.exec("sh", "-c", f"kill -0 {grabber} && echo alive").strip() == "alive"


@pytest.fixture
def cli_runtime_gateway(
    tmp_path: Path, client_tools: None
) -> Iterator[tuple[CliGateway, SSHClient]]:
    with CliGateway(tmp_path / "host_key", "--exec-path", "runtime") as gateway:
        yield gateway, SSHClient(gateway.host, gateway.port, gateway.host_key_path, tmp_path / "c")


def _children(pid: int) -> list[tuple[int, str, str]]:
    """(pid, state, command line) of each child of ``pid``, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        if int(fields[1]) == pid:
            found.append((int(stat.parent.name), fields[0], command))
    return found


def test_sigkilled_gateway_hangs_up_its_sessions(
    cli_runtime_gateway: tuple[CliGateway, SSHClient], sandbox: Container
) -> None:
    gateway, ssh = cli_runtime_gateway
    held = ssh.popen(
        sandbox.session_id,
        "echo up; sleep 314",
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    shell = ssh.popen(
        sandbox.session_id,
        options=["-tt"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert held.stdout is not None and held.stdout.readline() == b"up\n"
    assert shell.stdin is not None and shell.stdout is not None
    shell.stdin.write(b"exec sleep 315\n")
    shell.stdin.flush()
    wait_until(lambda: {"sleep 314", "sleep 315"} <= set(sandbox.processes()))
    shims = [pid for pid, _, command in _children(gateway.process.pid) if "_shim.py" in command]
    assert len(shims) == 1
    gateway.process.kill()
    gateway.process.wait()
    wait_until(
        lambda: not {"sleep 314", "sleep 315"} & set(sandbox.processes()),
        message="the sandbox's processes outlived the gateway",
    )
    # The shim that hung them up is gone too.
    for pid in shims:
        wait_until(lambda pid=pid: not Path(f"/proc/{pid}").exists())  # type: ignore[misc]
    for client in (held, shell):
        client.kill()
        client.wait()


def test_thousand_sequential_sessions_leave_no_zombie_and_no_process(
    cli_runtime_gateway: tuple[CliGateway, SSHClient], sandbox: Container
) -> None:
    gateway, _ = cli_runtime_gateway

    async def thousand_sessions() -> list[int | None]:
        async with asyncssh.connect(
            gateway.host, gateway.port, username=sandbox.session_id, known_hosts=None
        ) as conn:
            return [(await conn.run("true")).exit_status for _ in range(1000)]

    statuses = asyncio.run(thousand_sessions())
    assert statuses == [0] * 1000
    gateway_children = _children(gateway.process.pid)
    descendants = gateway_children + [
        child for pid, _, _ in gateway_children for child in _children(pid)
    ]
    assert [c for c in descendants if c[1] == "Z"] == []
    assert sorted(sandbox.processes()) == sorted(
        ["/sbin/docker-init -- sleep infinity", "sleep infinity", "ps -eo stat=,args="]
    )
