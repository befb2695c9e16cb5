"""A hostile sandbox hurts nobody else: each attack is what a sandbox's root could do.

Each test makes one sandbox hostile from the inside (or changes it under the
gateway), opens many connections to it at once, and meanwhile checks a healthy
tenant on the same gateway: its ``ssh true`` finishes within 2 s every time, and
its SFTP and ``-L`` keep working. The hostile tenant is either served or told why
in one line, and once its connections end, the gateway's memory, threads and
descriptors are back where they were.

The gateway is `sandbox-ssh serve` in its own process, so its /proc is its own.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ..support.containers import Container, Containers, docker
from ..support.gateway import CliGateway
from ..support.kubernetes import PodMaker
from ..support.netclient import free_port, recv_exact
from ..support.ssh import SSHClient
from ..support.wait import wait_until
from .test_forwarding import LocalForward

# "Within 2 s every time" means something only with nothing else on the machine.
pytestmark = pytest.mark.serial

HEALTHY_TRUE_SECONDS = 2.0
ECHO_PORT = 7000
# A gateway whose starts wait at most this long makes the suite quick; the bound is the
# same code whatever its value.
START_TIMEOUT = "5s"
RSS_SLACK_KIB = 16 * 1024


@dataclass(frozen=True)
class Usage:
    rss_kib: int
    threads: int
    fds: int


def usage(pid: int) -> Usage:
    fields = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            fields[key] = value.split()[0] if value.split() else ""
    return Usage(int(fields["VmRSS"]), int(fields["Threads"]), len(os.listdir(f"/proc/{pid}/fd")))


@dataclass
class Neighbour:
    """The healthy tenant, checked while an attack goes on."""

    ssh: SSHClient
    sandbox: Container
    tmp_path: Path
    true_seconds: list[float] = field(default_factory=list)

    def ssh_true(self) -> None:
        started = time.monotonic()
        result = self.ssh.run(self.sandbox.session_id, "true", timeout=30)
        elapsed = time.monotonic() - started
        self.true_seconds.append(elapsed)
        assert result.returncode == 0, result.stderr

    def sftp_round_trip(self) -> None:
        payload = os.urandom(100_000)
        local = self.tmp_path / "neighbour.bin"
        back = self.tmp_path / "neighbour.back"
        local.write_bytes(payload)
        batch = self.tmp_path / "batch"
        batch.write_text(f"put {local} /tmp/n.bin\nget /tmp/n.bin {back}\n")
        argv = ["sftp", *self.ssh.options, "-P", str(self.ssh.port), "-b", str(batch)]
        result = subprocess.run(
            [*argv, f"{self.sandbox.session_id}@{self.ssh.host}"],
            capture_output=True,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
        assert back.read_bytes() == payload

    def local_forward_round_trip(self) -> None:
        spec = f"{free_port()}:127.0.0.1:{ECHO_PORT}"
        forward = LocalForward(self.ssh, self.sandbox.session_id, spec, self.tmp_path)
        try:
            with forward.connect() as sock:
                sock.sendall(b"ping\n")
                assert recv_exact(sock, 5) == b"ping\n"
        finally:
            forward.close()

    def check_while(self, attack_running: Callable[[], bool]) -> None:
        """Every check at least once, and `ssh true` again until the attack is over."""
        self.ssh_true()
        self.sftp_round_trip()
        self.local_forward_round_trip()
        rounds = 1
        while attack_running() or rounds < 3:
            self.ssh_true()
            rounds += 1
        slow = [round(s, 2) for s in self.true_seconds if s > HEALTHY_TRUE_SECONDS]
        assert not slow, f"healthy `ssh true` took {slow} s (all: {self.true_seconds})"


MakeSandbox = Callable[[Sequence[str]], Container]


@dataclass
class Arena:
    gateway: CliGateway
    ssh: SSHClient
    neighbour: Neighbour
    make_sandbox: MakeSandbox
    baseline: Usage

    def hostile(self, *, extra: Sequence[str] = (), setup: str = "") -> Container:
        sandbox = self.make_sandbox(extra)
        if setup:
            sandbox.exec("sh", "-c", setup)
        return sandbox

    def usage(self) -> Usage:
        return usage(self.gateway.front_pid)


def open_arena(gateway: CliGateway, make_sandbox: MakeSandbox, tmp_path: Path) -> Arena:
    ssh = SSHClient(gateway.host, gateway.port, gateway.host_key_path, tmp_path / "client")
    healthy = make_sandbox(())
    healthy.exec(
        "sh",
        "-c",
        f"nohup socat TCP-LISTEN:{ECHO_PORT},bind=127.0.0.1,fork,reuseaddr EXEC:cat "
        ">/dev/null 2>&1 &",
    )
    neighbour = Neighbour(ssh, healthy, tmp_path)
    # Warm up everything a connection, a transfer and a forward allocate once, with a
    # burst as large as any attack's.
    burst = [ssh.popen(healthy.session_id, "true") for _ in range(16)]
    assert all(client.wait(60) == 0 for client in burst)
    for _ in range(3):
        neighbour.ssh_true()
    neighbour.sftp_round_trip()
    neighbour.local_forward_round_trip()
    neighbour.true_seconds.clear()
    return Arena(gateway, ssh, neighbour, make_sandbox, usage(gateway.front_pid))


@pytest.fixture
def arena(tmp_path: Path, containers: Containers, client_tools: None) -> Iterator[Arena]:
    gateway = CliGateway(tmp_path / "host_key", "--start-timeout", START_TIMEOUT)
    try:
        yield open_arena(gateway, lambda extra: containers.start(extra=extra), tmp_path)
    finally:
        gateway.terminate()


@pytest.fixture
def kubernetes_arena(
    request: pytest.FixtureRequest, tmp_path: Path, containers: Containers, client_tools: None
) -> Iterator[Arena]:
    """The same, with the Kubernetes provider against the emulated API server."""
    if request.config.getoption("--engine") != "docker":
        pytest.skip("the emulated API server runs on dockerd only")
    pods = PodMaker(containers, request.getfixturevalue("emulated_api_server").kubeconfig)
    gateway = CliGateway(
        tmp_path / "host_key",
        "--provider",
        "kubernetes",
        "--kubeconfig",
        str(pods.kubeconfig),
        "--namespace",
        pods.namespace,
        "--start-timeout",
        START_TIMEOUT,
    )
    try:
        yield open_arena(gateway, lambda extra: pods.create()[1], tmp_path)
    finally:
        gateway.terminate()
        pods.remove_all()


@dataclass
class Outcome:
    returncode: int | None  # None: still running when the test ended it
    stderr: bytes


def one_line_reason(outcome: Outcome) -> bool:
    """The gateway's reason is one line (OpenSSH adds its own "Disconnected from ...")."""
    text = outcome.stderr.decode(errors="replace")
    lines = [line for line in text.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("Disconnected from ")]
    return len(lines) == 1 and "Traceback" not in lines[0]


def attack(
    arena: Arena,
    hostile: Container,
    command: Sequence[str],
    *,
    connections: int = 8,
    client_seconds: float = 20.0,
    options: Sequence[str] = (),
    stdout_unread: bool = False,
    during: Callable[[], None] | None = None,
) -> list[Outcome]:
    """Open ``connections`` at once to ``hostile`` while the neighbour is checked.

    Clients still running after ``client_seconds`` are killed (a hostile session may
    simply never end); then the gateway's usage must return to its baseline.
    """
    clients = [
        arena.ssh.popen(
            hostile.session_id,
            *command,
            options=options,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout_unread else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for _ in range(connections)
    ]
    errors: dict[int, bytes] = {}

    def read_stderr(index: int, client: subprocess.Popen[bytes]) -> None:
        assert client.stderr is not None
        errors[index] = client.stderr.read(1 << 20)

    readers = [
        threading.Thread(target=read_stderr, args=(i, c), daemon=True)
        for i, c in enumerate(clients)
    ]
    for reader in readers:
        reader.start()
    deadline = time.monotonic() + client_seconds
    if during is not None:
        during()
    try:
        arena.neighbour.check_while(
            lambda: time.monotonic() < deadline and any(c.poll() is None for c in clients)
        )
        outcomes = []
        for index, client in enumerate(clients):
            try:
                code: int | None = client.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                code = None
            client.kill()
            client.wait()
            readers[index].join(10)
            outcomes.append(Outcome(code, errors.get(index, b"")))
    finally:
        for client in clients:
            client.kill()
            for stream in (client.stdout, client.stderr):
                if stream is not None:
                    stream.close()
    return outcomes


def assert_recovers(arena: Arena, timeout: float = 60.0) -> None:
    """The gateway holds nothing more for the hostile tenant once its connections ended."""
    base = arena.baseline

    def recovered() -> Usage | None:
        now = arena.usage()
        ok = now.fds <= base.fds and now.threads <= base.threads
        return now if ok and now.rss_kib <= base.rss_kib + RSS_SLACK_KIB else None

    try:
        wait_until(recovered, timeout)
    except AssertionError:
        raise AssertionError(f"gateway usage {arena.usage()} did not return to {base}") from None
    # And the healthy tenant is still served.
    arena.neighbour.ssh_true()


def assert_served_or_told(outcomes: list[Outcome], reason: str | None = None) -> None:
    for outcome in outcomes:
        if outcome.returncode == 0:
            continue
        assert outcome.returncode is not None, "a hostile client hung instead of being told why"
        assert one_line_reason(outcome), outcome.stderr[:2000]
        if reason is not None:
            assert reason in outcome.stderr.decode(errors="replace"), outcome.stderr


# Files the gateway (or the runtime on its behalf) reads in a sandbox, replaced by what
# would block, never end, or be enormous.
FILE_ATTACKS = {
    "fifo-group": "rm -f /etc/group && mkfifo /etc/group",
    "fifo-passwd": "rm -f /etc/passwd && mkfifo /etc/passwd",
    "device-group": "rm -f /etc/group && mknod /etc/group c 1 5",
    "symlink-passwd-to-urandom": "ln -sf /dev/urandom /etc/passwd",
    "symlink-group-to-proc": "ln -sf /proc/1/environ /etc/group",
    "giant-passwd": "truncate -s 2G /etc/passwd",
}


@pytest.mark.parametrize("attack_name", sorted(FILE_ATTACKS))
def test_files_replaced_by_fifos_devices_symlinks_and_giants(
    arena: Arena, attack_name: str, exec_path: str
) -> None:
    hostile = arena.hostile(setup=FILE_ATTACKS[attack_name])
    outcomes = attack(arena, hostile, ["echo", "hi"], connections=12)
    assert_served_or_told(outcomes)
    if exec_path == "runtime" and attack_name.startswith(("fifo", "device")):
        # The runtime path reads passwd and group itself: refused at once, naming the file.
        file = "/etc/group" if attack_name.endswith("group") else "/etc/passwd"
        assert all(f"{file} in the sandbox is a" in o.stderr.decode() for o in outcomes)
    assert_recovers(arena)


def test_hosts_file_made_giant_for_forwarding(arena: Arena) -> None:
    # /etc/hosts is Docker's bind mount: root cannot replace it, but can fill it.
    hostile = arena.hostile(setup="head -c 3000000 /dev/zero | tr '\\0' x > /etc/hosts")
    outcomes = attack(
        arena, hostile, [], options=["-W", "some-name:22"], connections=12, client_seconds=20
    )
    for outcome in outcomes:
        assert outcome.returncode == 255
        assert b"cannot resolve some-name: /etc/hosts in the sandbox is larger than" in (
            outcome.stderr
        ), outcome.stderr
    assert_recovers(arena)


SH_NEVER_RETURNS = (
    "printf '#!/bin/dash\\nexec sleep 100000\\n' > /bin/sh.x && chmod +x /bin/sh.x "
    "&& mv /bin/sh.x /bin/sh"
)
SH_FLOODS = (
    "printf '#!/bin/dash\\nexec cat /dev/zero\\n' > /bin/sh.x && chmod +x /bin/sh.x "
    "&& mv /bin/sh.x /bin/sh"
)


def test_a_bin_sh_that_never_returns(arena: Arena, exec_path: str) -> None:
    hostile = arena.hostile(setup=SH_NEVER_RETURNS)
    outcomes = attack(arena, hostile, ["true"], connections=12, client_seconds=12)
    if exec_path == "api":
        # The gateway waits for the login step's first answer, then gives up in one line.
        assert_served_or_told(outcomes, "did not start the session within 5 s")
    else:
        # The process started; like a login shell that hangs under sshd, it is the
        # sandbox's own. Its clients are ended, and then it holds nothing of the gateway.
        assert all(o.returncode is None for o in outcomes)
    assert_recovers(arena)


def test_a_login_that_prints_gigabytes(arena: Arena) -> None:
    hostile = arena.hostile(setup=SH_FLOODS)
    outcomes = attack(arena, hostile, ["true"], connections=8, client_seconds=10)
    assert all(o.returncode in (None, 255) for o in outcomes), outcomes
    assert_recovers(arena)


def test_output_floods_to_clients_that_stop_reading(arena: Arena) -> None:
    hostile = arena.hostile()
    peak: list[int] = []

    def sample_memory() -> None:
        peak.append(arena.usage().rss_kib)

    outcomes = attack(
        arena,
        hostile,
        ["cat", "/dev/zero"],
        connections=8,
        client_seconds=8,
        stdout_unread=True,
        during=sample_memory,
    )
    sample_memory()
    assert all(o.returncode is None for o in outcomes)  # stalled until the test ended them
    grown = max(peak) - arena.baseline.rss_kib
    assert grown < 8 * RSS_SLACK_KIB, f"gateway RSS grew {grown} KiB for 8 stalled clients"
    assert_recovers(arena)


def test_regression_output_floods_to_clients_reading_fast_slowed_every_other_tenant(
    arena: Arena,
) -> None:
    # Eight clients reading a flood as fast as they can kept the gateway's loop busy, and a
    # healthy tenant's `ssh true` took 3.4x (runtime path) to 5x (API path) its time alone;
    # the tenant's output now takes at most its loop share while the neighbour is interactive.
    hostile = arena.hostile()
    outcomes = attack(arena, hostile, ["cat", "/dev/zero"], connections=8, client_seconds=8)
    assert all(o.returncode is None for o in outcomes)  # still flooding when the test ended
    assert_recovers(arena)


def test_processes_that_ignore_signals_and_fork(arena: Arena) -> None:
    hostile = arena.hostile()
    # Forked children that ignore TERM and INT, a leader that forks on, and one child
    # that ignores HUP too (nohup: it outlives the session, as under sshd, README).
    script = (
        "trap '' TERM INT; "
        "for i in 1 2 3 4 5 6 7 8; do (trap '' TERM INT; exec sleep 1001) & done; "
        "(trap '' HUP TERM INT; exec sleep 1002) & "
        "while :; do sleep 1001 & wait; done"
    )
    outcomes = attack(arena, hostile, [script], connections=8, client_seconds=4)
    assert all(o.returncode is None for o in outcomes)
    assert_recovers(arena)
    wait_until(
        lambda: not any("sleep 1001" in p for p in hostile.processes()),
        30,
        "processes holding the sessions outlived their hang-up",
    )


def test_a_container_paused_under_live_sessions(arena: Arena) -> None:
    hostile = arena.hostile()

    def pause_soon() -> None:
        wait_until(
            lambda: sum("sleep 1000" in p for p in hostile.processes()) >= 8,
            30,
            "the sessions did not start",
        )
        docker("pause", hostile.id)

    outcomes = attack(
        arena, hostile, ["sleep", "1000"], connections=8, client_seconds=6, during=pause_soon
    )
    assert all(o.returncode is None for o in outcomes)
    assert_recovers(arena)
    docker("unpause", hostile.id)


def test_a_paused_container_is_started_again_or_refused(arena: Arena) -> None:
    hostile = arena.hostile()
    docker("pause", hostile.id)
    outcomes = attack(arena, hostile, ["echo", "hi"], connections=8)
    assert_served_or_told(outcomes)
    assert_recovers(arena)


def test_a_container_killed_during_starts(arena: Arena) -> None:
    hostile = arena.hostile()

    def kill_it() -> None:
        docker("kill", hostile.id)

    outcomes = attack(arena, hostile, ["echo", "hi"], connections=12, during=kill_it)
    assert_served_or_told(outcomes)
    assert_recovers(arena)


def test_a_container_restarted_under_live_sessions(arena: Arena) -> None:
    hostile = arena.hostile()

    def restart_soon() -> None:
        wait_until(
            lambda: sum("sleep 1000" in p for p in hostile.processes()) >= 4,
            30,
            "the sessions did not start",
        )
        docker("restart", "-t", "0", hostile.id)

    outcomes = attack(
        arena, hostile, ["sleep", "1000"], connections=4, client_seconds=15, during=restart_soon
    )
    for outcome in outcomes:
        assert outcome.returncode is not None and outcome.returncode != 0
    assert_recovers(arena)


def test_a_fork_bomb_under_a_pids_limit(arena: Arena) -> None:
    hostile = arena.hostile(extra=["--pids-limit", "64", "--cpus", "0.5"])
    docker("exec", "-d", hostile.id, "bash", "-c", "bomb() { bomb | bomb & }; bomb; sleep infinity")
    wait_until(
        lambda: _pids_in(hostile) >= 60,
        30,
        "the fork bomb did not fill the pids limit",
    )
    outcomes = attack(arena, hostile, ["echo", "hi"], connections=8, client_seconds=20)
    assert_served_or_told(outcomes)
    assert_recovers(arena)


def _pids_in(container: Container) -> int:
    """Processes in the container's pids cgroup, read on the host (exec would need a pid)."""
    pid = docker("inspect", "-f", "{{.State.Pid}}", container.id).strip()
    with open(f"/proc/{pid}/cgroup") as cgroups:
        for line in cgroups:
            _, controllers, path = line.strip().split(":", 2)
            for base in ("/sys/fs/cgroup/pids", "/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
                if controllers not in ("pids", ""):
                    continue
                try:
                    with open(f"{base}{path}/pids.current") as current:
                        return int(current.read())
                except OSError:
                    continue
    raise AssertionError(f"no pids cgroup found for {container.id[:12]}")


DIAL_OWN_FORWARD = """
import socket, sys, time
held = []
for _ in range({count}):
    held.append(socket.create_connection(("127.0.0.1", {port})))
print("dialled", len(held), flush=True)
time.sleep(300)
"""


def test_a_sandbox_dialling_its_own_remote_forward(arena: Arena) -> None:
    """Each connection to a -R listener costs the gateway a descriptor: bounded per tenant."""
    hostile = arena.hostile()
    # The client's end of the forward: a listener that never accepts (its backlog holds
    # every connection the client makes), so each forwarded connection stays open.
    sink = socket.create_server(("127.0.0.1", 0), backlog=4096)
    sink_port = sink.getsockname()[1]
    remote_port = 7100
    script = DIAL_OWN_FORWARD.format(count=700, port=remote_port)
    client = arena.ssh.popen(
        hostile.session_id,
        "python3",
        "-c",
        f"'{script}'",
        options=["-R", f"{remote_port}:127.0.0.1:{sink_port}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert client.stdout is not None
        assert client.stdout.readline() == b"dialled 700\n"
        during = arena.usage()
        # 512 forwarded connections at most (the default share), each one descriptor.
        assert during.fds <= arena.baseline.fds + 512 + 32, during
        arena.neighbour.check_while(lambda: False)
    finally:
        client.kill()
        client.wait()
        if client.stdout is not None:
            client.stdout.close()
        sink.close()
    assert_recovers(arena)


# On Kubernetes the login step is a wrapper whose PID line the gateway waits for (as on
# Docker's exec API), and forwarding goes through a helper in the pod.
KUBERNETES_ATTACKS = {
    "fifo-group": (FILE_ATTACKS["fifo-group"], ["echo", "hi"]),
    "sh-never-returns": (SH_NEVER_RETURNS, ["true"]),
    "login-prints-gigabytes": (SH_FLOODS, ["true"]),
}


@pytest.mark.parametrize("attack_name", sorted(KUBERNETES_ATTACKS))
def test_kubernetes_emulated(kubernetes_arena: Arena, attack_name: str) -> None:
    setup, command = KUBERNETES_ATTACKS[attack_name]
    hostile = kubernetes_arena.hostile(setup=setup)
    outcomes = attack(kubernetes_arena, hostile, command, connections=8, client_seconds=12)
    for outcome in outcomes:
        assert outcome.returncode is None or one_line_reason(outcome), outcome.stderr[:2000]
    assert_recovers(kubernetes_arena)


def test_kubernetes_emulated_output_floods_to_clients_that_stop_reading(
    kubernetes_arena: Arena,
) -> None:
    hostile = kubernetes_arena.hostile()
    outcomes = attack(
        kubernetes_arena,
        hostile,
        ["cat", "/dev/zero"],
        connections=8,
        client_seconds=8,
        stdout_unread=True,
    )
    assert all(o.returncode is None for o in outcomes)
    assert_recovers(kubernetes_arena)
