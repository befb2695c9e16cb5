#!/usr/bin/env python3
"""Benchmark sandbox-ssh against OpenSSH's sshd in the same container and raw `docker exec`.

    python bench/run.py [--quick] [--json PATH] [--only WORKLOAD ...]

One run sets up its sandboxes (dockerd and the image are prepared as the tests
do), then runs each workload against four targets:

* runtime: `sandbox-ssh serve --exec-path runtime` (processes started by the
  container's OCI runtime, bytes straight to the gateway);
* api: `sandbox-ssh serve --exec-path api` (Docker's exec API), on the same
  sandbox;
* sshd: OpenSSH's sshd inside a container of the same image, reached through
  that container's own network namespace (ProxyCommand nsenter ... socat), so
  no private-range address is used;
* docker: `docker exec`, where the workload allows it.

The client is the same OpenSSH client for both SSH targets, and both go through
the same kind of socat ProxyCommand hop, so the comparison is like for like.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import pty
import select
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.support.netclient import free_port  # noqa: E402
from tests.support.system import ensure_commands, ensure_dockerd, ensure_sandbox_image  # noqa: E402

LABEL = "sandbox-ssh.bench"
# The gateway's two exec paths, each its own `serve` on the same sandbox.
GATEWAY_PATHS = ("runtime", "api")
MB = 1024 * 1024
CHACHA = "chacha20-poly1305@openssh.com"
AES = "aes128-gcm@openssh.com"


def run(argv: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(list(argv), capture_output=True, check=True, **kwargs)  # type: ignore[call-overload, no-any-return]


def docker(*args: str) -> str:
    return run(["docker", *args]).stdout.decode().strip()


SSH_CLIENT = [
    "ssh",
    "-F",
    "/dev/null",
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "LogLevel=ERROR",
    "-o",
    "BatchMode=yes",
]


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def wait_listening(port: int, timeout: float, alive: Callable[[], bool] = lambda: True) -> bool:
    """Poll until something accepts on the loopback port; False on timeout or death."""
    deadline = time.monotonic() + timeout
    while not listening(port):
        if time.monotonic() > deadline or not alive():
            return False
        time.sleep(0.05)
    return True


def rss_kib(pids: Sequence[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


def children(pid: int) -> list[int]:
    try:
        out = run(["pgrep", "-P", str(pid)]).stdout.decode().split()
    except subprocess.CalledProcessError:
        return []
    return [int(p) for p in out]


@dataclass
class Target:
    name: str
    argv: Callable[..., list[str]]  # (command, *, tty=False, stdin=False, cipher=None, extra=())
    sftp_argv: Callable[[], list[str]] | None = None
    memory: Callable[[], int] | None = None  # KiB attributable to the SSH server


@dataclass
class Bench:
    quick: bool
    image: str
    workdir: Path
    gateway_workers: int = 1
    gateway_args: list[str] = field(default_factory=list)  # more `serve` options, as given
    results: dict[str, dict[str, object]] = field(default_factory=dict)
    gateways: dict[str, tuple[subprocess.Popen[bytes], int]] = field(default_factory=dict)
    containers: list[str] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    # --- set-up -------------------------------------------------------------------------

    def container_of(self, target: Target) -> str:
        """The container a target's processes run in."""
        return self.gateway_container if target.name in GATEWAY_PATHS else self.sshd_container

    def sandbox(self, session_id: str) -> str:
        container = docker(
            "run",
            "-d",
            "--init",
            "--network",
            "none",
            "--label",
            f"{LABEL}=1",
            "--label",
            f"sandbox-ssh.session={session_id}",
            self.image,
        )
        self.containers.append(container)
        return container

    def start_gateway(
        self, workers: int = 1, exec_path: str = "runtime"
    ) -> tuple[subprocess.Popen[bytes], int]:
        port = free_port()
        log = open(self.workdir / f"gateway-{port}.log", "wb")  # noqa: SIM115
        argv = [
            sys.executable,
            "-m",
            "sandbox_ssh",
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            "--host-key",
            str(self.workdir / "gateway_key"),
            "--log-level",
            "warning",
            # Capacity, not admission control, is measured: lift the limits that would
            # refuse 200 sessions to one sandbox, as sshd gets MaxStartups=1000.
            "--max-startups",
            "1000",
            "--max-connections-per-session",
            "1000",
            "--max-connections-per-minute",
            "100000",
            "--exec-path",
            exec_path,
        ]
        if workers > 1:
            argv += ["--workers", str(workers)]
        argv += self.gateway_args
        process = subprocess.Popen(argv, stdout=log, stderr=log)
        self.processes.append(process)
        if not wait_listening(port, 30, alive=lambda: process.poll() is None):
            log_text = (self.workdir / f"gateway-{port}.log").read_text()
            raise RuntimeError(f"gateway did not start: {log_text}")
        # serve as root binds its port before its fronts are ready (they wait for the broker):
        # one connection answered by a front, so that no workload times the start-up.
        probe = [*SSH_CLIENT, "-p", str(port), "bench-no-such-session@127.0.0.1", "true"]
        answer = subprocess.run(probe, capture_output=True, timeout=60)
        if b"no sandbox with this session ID" not in answer.stderr:
            log_text = (self.workdir / f"gateway-{port}.log").read_text()
            raise RuntimeError(f"gateway did not answer: {answer.stderr!r} {log_text}")
        return process, port

    def start_sshd(self, container: str, key: Path) -> int:
        run(
            [
                "docker",
                "exec",
                "-i",
                container,
                "sh",
                "-c",
                "mkdir -p /root/.ssh /run/sshd && cat > /root/.ssh/authorized_keys && "
                "chmod 600 /root/.ssh/authorized_keys && ssh-keygen -A >/dev/null && "
                "/usr/sbin/sshd -o PermitRootLogin=prohibit-password -o UsePAM=no "
                "-o MaxStartups=1000",
            ],
            input=Path(str(key) + ".pub").read_bytes(),
        )
        return int(docker("inspect", "-f", "{{.State.Pid}}", container))

    def client_key(self) -> Path:
        key = self.workdir / "client_key"
        if not key.exists():
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)])
        return key

    def targets(self) -> list[Target]:
        key = self.client_key()
        self.gateways = {
            path: self.start_gateway(self.gateway_workers, path) for path in GATEWAY_PATHS
        }
        session_id = f"bench-{uuid.uuid4().hex[:8]}"
        gateway_container = self.sandbox(session_id)
        sshd_container = self.sandbox(f"bench-sshd-{uuid.uuid4().hex[:8]}")
        sshd_pid = self.start_sshd(sshd_container, key)
        self.gateway_container, self.sshd_container = gateway_container, sshd_container
        self.session_id = session_id
        common = SSH_CLIENT

        def ssh_argv(proxy: str, user: str) -> Callable[..., list[str]]:
            def argv(
                command: str | None,
                *,
                tty: bool = False,
                cipher: str | None = None,
                extra: Sequence[str] = (),
                stdin: bool = False,
            ) -> list[str]:
                options = [*common, "-o", f"ProxyCommand={proxy}", "-i", str(key), *extra]
                if cipher:
                    options += ["-c", cipher]
                if tty:
                    options.append("-tt")
                return [*options, f"{user}@sandbox", *([command] if command else [])]

            return argv

        sshd_proxy = f"nsenter -t {sshd_pid} -n socat - TCP:127.0.0.1:22"

        def docker_argv(
            command: str | None,
            *,
            tty: bool = False,
            cipher: str | None = None,
            extra: Sequence[str] = (),
            stdin: bool = False,
        ) -> list[str]:
            flags = (["-i"] if stdin or tty else []) + (["-t"] if tty else [])
            return [
                "docker",
                "exec",
                *flags,
                gateway_container,
                "sh",
                "-c",
                command or "exec bash -l",
            ]

        def sftp(proxy: str, user: str) -> Callable[[], list[str]]:
            return lambda: [
                "sftp",
                *common[1:],
                "-o",
                f"ProxyCommand={proxy}",
                "-i",
                str(key),
                "-b",
                "-",
                f"{user}@sandbox",
            ]

        def gateway_memory(process: subprocess.Popen[bytes]) -> Callable[[], int]:
            return lambda: rss_kib([process.pid, *children(process.pid)])

        def sshd_memory() -> int:
            out = docker(
                "exec",
                sshd_container,
                "sh",
                "-c",
                "ps -C sshd -o rss= | awk '{s+=$1} END {print s+0}'",
            )
            return int(out or 0)

        gateway_targets = []
        for path, (process, port) in self.gateways.items():
            proxy = f"socat - TCP:127.0.0.1:{port}"
            gateway_targets.append(
                Target(
                    path,
                    ssh_argv(proxy, session_id),
                    sftp(proxy, session_id),
                    gateway_memory(process),
                )
            )
        return [
            *gateway_targets,
            Target("sshd", ssh_argv(sshd_proxy, "root"), sftp(sshd_proxy, "root"), sshd_memory),
            Target("docker", docker_argv),
        ]

    def cleanup(self) -> None:
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
        if self.containers:
            subprocess.run(["docker", "rm", "-f", *self.containers], capture_output=True)

    # --- measuring ----------------------------------------------------------------------

    def record(
        self, workload: str, unit: str, figures: dict[str, float | None], better: str
    ) -> None:
        sshd = figures.get("sshd")
        ratios = {
            f"{path}/sshd": (figures[path] or 0) / sshd
            for path in GATEWAY_PATHS
            if figures.get(path) and sshd
        }
        self.results[workload] = {"unit": unit, "better": better, **figures, **ratios}
        shown = "  ".join(
            f"{name}={value:.3f}"
            for name, value in {**figures, **ratios}.items()
            if value is not None
        )
        print(f"  {workload:<40} {shown}", flush=True)


def timed(argv: Sequence[str], stdin: int | None = None, shell: str | None = None) -> float:
    started = time.perf_counter()
    if shell is not None:
        subprocess.run(
            shell, shell=True, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
    else:
        subprocess.run(
            list(argv), check=True, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
    return time.perf_counter() - started


def best_rate(size: int, durations: Sequence[float]) -> float:
    return size / MB / min(durations)


def interleaved(
    targets: list[Target], repeats: int, run: Callable[[Target], float | None]
) -> dict[str, list[float]]:
    """Run each target once per round, round after round, so that drift hits all alike."""
    durations: dict[str, list[float]] = {}
    for _ in range(repeats):
        for target in targets:
            duration = run(target)
            if duration is not None:
                durations.setdefault(target.name, []).append(duration)
    return durations


def workload_throughput(bench: Bench, targets: list[Target], size: int, repeats: int) -> None:
    for cipher in (None, AES):
        label = "default cipher" if cipher is None else "aes128-gcm"

        def download(target: Target, cipher: str | None = cipher) -> float | None:
            if cipher and target.name == "docker":
                return None
            return timed(target.argv(f"head -c {size} /dev/zero", cipher=cipher))

        def upload(target: Target, cipher: str | None = cipher) -> float | None:
            if cipher and target.name == "docker":
                return None
            argv = target.argv("cat > /dev/null", cipher=cipher, stdin=True)
            return timed([], shell=f"head -c {size} /dev/zero | {shlex.join(argv)}")

        for direction, run in (("download", download), ("upload", upload)):
            durations = interleaved(targets, repeats, run)
            figures: dict[str, float | None] = {
                name: best_rate(size, values) for name, values in durations.items()
            }
            bench.record(f"{direction} MB/s ({label})", "MB/s", figures, "higher")


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
RUNTIME_PROCESSES = ("dockerd", "containerd", "containerd-shim", "runc")


def machine_busy_seconds() -> float:
    """CPU time spent by the whole machine, every core (not idle, iowait or hypervisor steal)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    user, nice, system, _idle, _iowait, irq, softirq = fields
    return (user + nice + system + irq + softirq) / CLOCK_TICKS


def process_seconds(match: Callable[[int, str], bool]) -> dict[int, float]:
    """CPU time of matching processes (with their reaped children), by PID."""
    found: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        if match(int(entry.name), name):
            times = stat[stat.rindex(")") + 2 :].split()[11:15]
            found[int(entry.name)] = sum(int(t) for t in times) / CLOCK_TICKS
    return found


def cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(value - before.get(pid, 0.0) for pid, value in after.items())


def workload_cpu(bench: Bench, targets: list[Target], size: int) -> None:
    """Where a download's CPU goes: the whole machine, the gateway, the container runtime."""
    gateway_pids = {
        path: {process.pid, *children(process.pid)} for path, (process, _) in bench.gateways.items()
    }

    def in_runtime(_pid: int, name: str) -> bool:
        return name.startswith(RUNTIME_PROCESSES)

    machine: dict[str, float | None] = {}
    gateway: dict[str, float | None] = {}
    runtime: dict[str, float | None] = {}
    gigabytes = size / (1024 * MB)
    for target in targets:
        argv = target.argv(f"head -c {size} /dev/zero")
        own_pids = gateway_pids.get(target.name, set())

        def in_gateway(pid: int, _name: str, own_pids: set[int] = own_pids) -> bool:
            return pid in own_pids

        busy, own, docker_daemons = (
            machine_busy_seconds(),
            process_seconds(in_gateway),
            process_seconds(in_runtime),
        )
        timed(argv)
        machine[target.name] = (machine_busy_seconds() - busy) / gigabytes
        if own_pids:
            gateway[target.name] = cpu_used(own, process_seconds(in_gateway)) / gigabytes
        if target.name != "sshd":  # sshd's bytes never pass through the runtime
            runtime[target.name] = cpu_used(docker_daemons, process_seconds(in_runtime)) / gigabytes
    bench.record("download CPU s/GB, whole machine", "s/GB", machine, "lower")
    bench.record("download CPU s/GB, gateway process", "s/GB", gateway, "lower")
    bench.record("download CPU s/GB, dockerd+containerd", "s/GB", runtime, "lower")


def workload_sftp(bench: Bench, targets: list[Target], size: int, repeats: int) -> None:
    local = bench.workdir / "sftp-put.bin"
    with local.open("wb") as handle:
        handle.truncate(size)
    sftp_targets = [t for t in targets if t.sftp_argv is not None]
    for target in sftp_targets:
        container = bench.container_of(target)
        docker("exec", container, "sh", "-c", f"head -c {size} /dev/zero > /tmp/sftp-get.bin")
    for direction, commands in (
        ("get", f"get /tmp/sftp-get.bin {bench.workdir}/sftp-got.bin\n"),
        ("put", f"put {local} /tmp/sftp-put.bin\n"),
    ):

        def transfer(target: Target, commands: str = commands) -> float:
            assert target.sftp_argv is not None
            started = time.perf_counter()
            subprocess.run(
                target.sftp_argv(), input=commands.encode(), check=True, capture_output=True
            )
            return time.perf_counter() - started

        durations = interleaved(sftp_targets, repeats, transfer)
        figures: dict[str, float | None] = {
            name: best_rate(size, values) for name, values in durations.items()
        }
        bench.record(f"sftp {direction} MB/s", "MB/s", figures, "higher")


def workload_sftp_requests(bench: Bench, targets: list[Target], requests: int) -> None:
    """Round trips of one small SFTP read at a time (sftp -B 1000 -R 1), the pattern of
    OpenSSH's regress/sftp.sh, which makes tens of thousands of them."""
    block = 1000
    sftp_targets = [t for t in targets if t.sftp_argv is not None]
    for target in sftp_targets:
        container = bench.container_of(target)
        docker("exec", container, "sh", "-c", f"head -c {requests * block} /dev/zero >/tmp/small")
    commands = f"get /tmp/small {bench.workdir}/small-got.bin\n".encode()

    def transfer(target: Target) -> float:
        assert target.sftp_argv is not None
        argv = target.sftp_argv()
        argv[1:1] = ["-B", str(block), "-R", "1"]
        started = time.perf_counter()
        subprocess.run(argv, input=commands, check=True, capture_output=True)
        return time.perf_counter() - started

    durations = interleaved(sftp_targets, 3, transfer)
    figures: dict[str, float | None] = {
        name: min(values) * 1000 / requests for name, values in durations.items()
    }
    bench.record("sftp small-request round trip ms", "ms", figures, "lower")


def workload_forward(bench: Bench, targets: list[Target], size: int, repeats: int) -> None:
    figures: dict[str, float | None] = {}
    for target in targets:
        if target.sftp_argv is None:
            continue
        container = bench.container_of(target)
        subprocess.Popen(
            [
                "docker",
                "exec",
                container,
                "socat",
                "TCP-LISTEN:7100,bind=127.0.0.1,reuseaddr,fork",
                f"SYSTEM:head -c {size} /dev/zero",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port = free_port()
        forward = subprocess.Popen(
            target.argv(None, extra=["-N", "-L", f"{port}:127.0.0.1:7100"]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_listening(port, 20)
        durations = []
        for _ in range(repeats):
            started = time.perf_counter()
            received = 0
            with socket.create_connection(("127.0.0.1", port)) as conn:
                while chunk := conn.recv(1 << 20):
                    received += len(chunk)
            durations.append(time.perf_counter() - started)
            if received != size:
                raise RuntimeError(f"{target.name}: forward delivered {received} of {size} bytes")
        forward.terminate()
        forward.wait()
        figures[target.name] = best_rate(size, durations)
    bench.record("port forward MB/s", "MB/s", figures, "higher")


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def workload_latency(bench: Bench, targets: list[Target], runs: int) -> None:
    samples = {t.name: [timed(t.argv("true")) * 1000 for _ in range(runs)] for t in targets}
    bench.record(
        "connect `true` median ms",
        "ms",
        {n: statistics.median(v) for n, v in samples.items()},
        "lower",
    )
    bench.record(
        "connect `true` p95 ms", "ms", {n: percentile(v, 0.95) for n, v in samples.items()}, "lower"
    )


def keystroke_echo(argv: Sequence[str], samples: int) -> list[float]:
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp(argv[0], list(argv))
    try:

        def read_until(marker: bytes, timeout: float = 20) -> None:
            buffer, deadline = b"", time.monotonic() + timeout
            while marker not in buffer:
                ready, _, _ = select.select([fd], [], [], max(0, deadline - time.monotonic()))
                if not ready:
                    raise RuntimeError(f"no {marker!r} from {argv[0]}")
                buffer += os.read(fd, 65536)

        os.write(fd, b"stty raw -echo; echo READY-$((6*7)); stty echo -icanon; cat >/dev/null\n")
        read_until(b"READY-42")
        time.sleep(0.2)
        latencies = []
        for index in range(samples + 10):
            key = bytes([97 + index % 26])
            started = time.perf_counter()
            os.write(fd, key)
            read_until(key)
            if index >= 10:
                latencies.append((time.perf_counter() - started) * 1000)
        return latencies
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(fd)


def workload_echo(bench: Bench, targets: list[Target], samples: int) -> None:
    results = {t.name: keystroke_echo(t.argv(None, tty=True), samples) for t in targets}
    bench.record(
        "keystroke echo p50 ms", "ms", {n: percentile(v, 0.5) for n, v in results.items()}, "lower"
    )
    bench.record(
        "keystroke echo p99 ms", "ms", {n: percentile(v, 0.99) for n, v in results.items()}, "lower"
    )


def client_error(client: subprocess.Popen[bytes]) -> str:
    client.kill()
    _, stderr = client.communicate()
    return (stderr or b"").decode(errors="replace").strip()[-300:] or f"exit {client.returncode}"


def workload_concurrency(bench: Bench, targets: list[Target], sessions: int) -> None:
    open_times: dict[str, float | None] = {}
    memory: dict[str, float | None] = {}
    latency: dict[str, float | None] = {}
    for target in targets:
        if target.memory is None:
            continue
        before = target.memory()
        started = time.perf_counter()
        clients = [
            subprocess.Popen(
                target.argv(None, tty=True),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for _ in range(sessions)
        ]
        for client in clients:
            assert client.stdin is not None
            try:
                client.stdin.write(b"echo OPEN-$((40+2))\n")
                client.stdin.flush()
            except BrokenPipeError:
                error = client_error(client)
                raise RuntimeError(f"{target.name}: a client exited: {error}") from None
        for client in clients:
            assert client.stdout is not None
            buffer = b""
            while b"OPEN-42" not in buffer:
                chunk = os.read(client.stdout.fileno(), 65536)
                if not chunk:
                    raise RuntimeError(
                        f"{target.name}: a session closed while opening: {client_error(client)}"
                    )
                buffer += chunk
        open_times[target.name] = time.perf_counter() - started
        memory[target.name] = (target.memory() - before) / sessions
        latency[target.name] = statistics.median(
            timed(target.argv("true")) * 1000 for _ in range(10)
        )
        for client in clients:
            client.kill()
        for client in clients:
            client.wait()
    bench.record(f"{sessions} sessions: open all s", "s", open_times, "lower")
    bench.record(f"{sessions} sessions: server KiB/session", "KiB", memory, "lower")
    bench.record(f"{sessions} sessions: `true` latency ms", "ms", latency, "lower")


def workload_storm(bench: Bench, targets: list[Target], connections: int) -> None:
    gateway = next(t for t in targets if t.name == "runtime")
    container = bench.gateway_container

    def storm() -> float:
        started = time.perf_counter()
        clients = [
            subprocess.Popen(
                gateway.argv("true"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            for _ in range(connections)
        ]
        failures = sum(client.wait() != 0 for client in clients)
        if failures:
            raise RuntimeError(f"{failures} of {connections} storm connections failed")
        return time.perf_counter() - started

    running = storm()  # reference: the same storm when nothing needs starting
    docker("stop", "-t", "0", container)
    started = time.perf_counter()
    docker("start", container)
    docker("exec", container, "true")
    own_start = time.perf_counter() - started
    docker("stop", "-t", "0", container)
    stopped = storm()
    bench.record(
        f"storm: {connections} connects to a stopped sandbox s",
        "s",
        {"runtime": stopped, "sandbox start": own_start, "same storm, sandbox running": running},
        "lower",
    )


async def _start_burst(
    port: int, session: str, other: str, connections: int, per_connection: int
) -> tuple[float, float, float]:
    """(starts per second, a newcomer's `true` s, another sandbox's `true` s) during a burst."""
    import asyncssh

    async def connect(user: str) -> asyncssh.SSHClientConnection:
        return await asyncssh.connect(
            "127.0.0.1", port, username=user, known_hosts=None, client_keys=None
        )

    async def timed_true(user: str) -> float:
        began = time.perf_counter()
        async with await connect(user) as conn:
            result = await conn.run("true")
        if result.exit_status != 0:
            raise RuntimeError(f"`true` failed during the burst: {result.stderr!r}")
        return time.perf_counter() - began

    async def until_up(process: asyncssh.SSHClientProcess[str]) -> None:
        if await process.stdout.readline() != "up\n":
            raise RuntimeError(f"a burst session did not start: {await process.stderr.read()}")

    clients = []
    for offset in range(0, connections, 50):
        count = min(50, connections - offset)
        clients += await asyncio.gather(*(connect(session) for _ in range(count)))
    try:
        began = time.perf_counter()
        processes = await asyncio.gather(
            *(
                client.create_process("echo up; exec sleep 120")
                for client in clients
                for _ in range(per_connection)
            )
        )
        # Every channel is open and its process queued: now somebody else arrives.
        newcomer = asyncio.ensure_future(timed_true(session))
        elsewhere = asyncio.ensure_future(timed_true(other))
        await asyncio.gather(*(until_up(process) for process in processes))
        elapsed = time.perf_counter() - began
        return len(processes) / elapsed, await newcomer, await elsewhere
    finally:
        for client in clients:
            client.close()
        await asyncio.gather(*(client.wait_closed() for client in clients))


def workload_starts(bench: Bench, connections: int, per_connection: int) -> None:
    """Process starts: how many per second, and whether a burst makes others wait."""
    other = f"bench-other-{uuid.uuid4().hex[:8]}"
    bench.sandbox(other)
    rates: dict[str, float | None] = {}
    newcomer: dict[str, float | None] = {}
    elsewhere: dict[str, float | None] = {}
    for path, (_, port) in bench.gateways.items():
        rates[path], newcomer[path], elsewhere[path] = asyncio.run(
            _start_burst(port, bench.session_id, other, connections, per_connection)
        )
        docker("exec", bench.gateway_container, "pkill", "-f", "sleep 120")
    sessions = connections * per_connection
    bench.record(f"start rate, {sessions} sessions: starts/s", "1/s", rates, "higher")
    bench.record(f"{sessions} starting: a new connection's `true` s", "s", newcomer, "lower")
    bench.record(f"{sessions} starting: `true` in another sandbox s", "s", elsewhere, "lower")


def workload_workers(bench: Bench, size: int) -> None:
    """Aggregate download throughput of 4 parallel clients with 1 and with 2 worker processes."""
    figures: dict[str, float | None] = {}
    for workers in (1, 2):
        process, port = bench.start_gateway(workers, "runtime")
        argv = [
            *SSH_CLIENT,
            "-p",
            str(port),
            f"{bench.session_id}@127.0.0.1",
            f"head -c {size} /dev/zero",
        ]
        started = time.perf_counter()
        clients = [subprocess.Popen(argv, stdout=subprocess.DEVNULL) for _ in range(4)]
        if any(client.wait() != 0 for client in clients):
            raise RuntimeError("a parallel download failed")
        figures[f"{workers} worker{'s' if workers > 1 else ''}"] = (
            4 * size / MB / (time.perf_counter() - started)
        )
        process.send_signal(signal.SIGTERM)
        process.wait(20)
    bench.record("4 parallel downloads, aggregate MB/s", "MB/s", figures, "higher")


def _gateway_true_ms(port: int, session_id: str, runs: int) -> list[float]:
    argv = [*SSH_CLIENT, "-p", str(port), f"{session_id}@127.0.0.1", "true"]
    return [timed(argv) * 1000 for _ in range(runs)]


def _wait_for_processes(
    container: str, name: str, count: int, clients: Sequence[subprocess.Popen[bytes]]
) -> None:
    deadline = time.monotonic() + 60
    while True:
        running = subprocess.run(
            ["docker", "exec", container, "pgrep", "-c", "-x", name], capture_output=True, text=True
        ).stdout.strip()
        if running.isdigit() and int(running) >= count:
            return
        if time.monotonic() > deadline or any(client.poll() is not None for client in clients):
            raise RuntimeError(f"the {count} flood clients did not all start")
        time.sleep(0.1)


def workload_neighbour(bench: Bench, targets: list[Target], runs: int, floods: int = 8) -> None:
    """A healthy tenant's `ssh true` alone, then beside a sandbox flooding output to clients.

    On the gateways the flood comes from another sandbox; sshd (one per container) is
    flooded and measured in its own container, which is the same machine contention.
    """
    noisy = f"bench-noisy-{uuid.uuid4().hex[:8]}"
    noisy_container = bench.sandbox(noisy)
    alone_p50: dict[str, float | None] = {}
    alone_p99: dict[str, float | None] = {}
    beside_p50: dict[str, float | None] = {}
    beside_p99: dict[str, float | None] = {}
    ratio: dict[str, float | None] = {}
    cases: list[tuple[str, Callable[[], list[float]], list[str], str]] = []
    for path, (_, port) in bench.gateways.items():
        cases.append(
            (
                path,
                lambda port=port: _gateway_true_ms(port, bench.session_id, runs),  # type: ignore[misc]
                [*SSH_CLIENT, "-p", str(port), f"{noisy}@127.0.0.1", "cat /dev/zero"],
                noisy_container,
            )
        )
    sshd = next(t for t in targets if t.name == "sshd")
    cases.append(
        (
            "sshd",
            lambda: [timed(sshd.argv("true")) * 1000 for _ in range(runs)],
            sshd.argv("cat /dev/zero"),
            bench.sshd_container,
        )
    )
    for path, measure, flood_argv, flood_container in cases:
        alone = measure()
        flooding = [subprocess.Popen(flood_argv, stdout=subprocess.DEVNULL) for _ in range(floods)]
        try:
            # Measure beside floods that flow, not beside their connections starting.
            _wait_for_processes(flood_container, "cat", floods, flooding)
            beside = measure()
        finally:
            for client in flooding:
                client.kill()
                client.wait()
        alone_p50[path], beside_p50[path] = percentile(alone, 0.5), percentile(beside, 0.5)
        alone_p99[path] = quiet = percentile(alone, 0.99)
        beside_p99[path] = noisy_p99 = percentile(beside, 0.99)
        ratio[path] = noisy_p99 / quiet
    bench.record("noisy neighbour: `true` alone p50 ms", "ms", alone_p50, "lower")
    bench.record("noisy neighbour: `true` alone p99 ms", "ms", alone_p99, "lower")
    bench.record(f"noisy neighbour: beside {floods} floods p50 ms", "ms", beside_p50, "lower")
    bench.record(f"noisy neighbour: beside {floods} floods p99 ms", "ms", beside_p99, "lower")
    bench.record("noisy neighbour: p99 beside / alone (target <= 3)", "x", ratio, "lower")


def workload_stalled(bench: Bench, size: int, seconds: float) -> None:
    """Gateway RSS above idle while a sandbox writes ``size`` bytes to a client reading none."""
    grown: dict[str, float | None] = {}
    for path, (process, port) in bench.gateways.items():
        pids = [process.pid, *children(process.pid)]
        subprocess.run(
            [*SSH_CLIENT, "-p", str(port), f"{bench.session_id}@127.0.0.1", "true"], check=True
        )
        idle = rss_kib(pids)
        argv = [*SSH_CLIENT, "-p", str(port), f"{bench.session_id}@127.0.0.1"]
        stalled = subprocess.Popen([*argv, f"head -c {size} /dev/zero"], stdout=subprocess.PIPE)
        peak = idle
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                peak = max(peak, rss_kib(pids))
                time.sleep(0.1)  # sampling memory over the window, not synchronising
        finally:
            stalled.kill()
            stalled.wait()
            if stalled.stdout is not None:
                stalled.stdout.close()
        grown[path] = (peak - idle) / 1024
    bench.record(
        f"stalled client, {size // MB} MiB written: gateway MiB above idle (target < 16)",
        "MiB",
        grown,
        "lower",
    )


def cell(row: dict[str, object], name: str) -> str:
    value = row.get(name)
    return f"{value:.2f}" if isinstance(value, float) else "-"


COLUMNS = ("runtime", "api", "sshd", "docker", "runtime/sshd", "api/sshd")


def print_table(bench: Bench) -> None:
    print("\n| workload | runtime path | API path | sshd | docker exec | runtime/sshd | api/sshd |")
    print("|---|---|---|---|---|---|---|")
    for workload, row in bench.results.items():
        extra = [k for k in row if k not in (*COLUMNS, "unit", "better")]
        cells = " | ".join(cell(row, name) for name in COLUMNS)
        if extra:
            cells += " | " + "; ".join(f"{k}: {cell(row, k)}" for k in extra)
        print(f"| {workload} | {cells} |")


def machine() -> dict[str, object]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.machine(),
    )
    ssh_version = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "openssh_client": ssh_version,
        "docker": docker("version", "-f", "{{.Server.Version}}"),
        "default_cipher": CHACHA,
    }


WORKLOADS = (
    "throughput",
    "cpu",
    "sftp",
    "sftp-requests",
    "forward",
    "latency",
    "echo",
    "concurrency",
    "storm",
    "starts",
    "workers",
    "neighbour",
    "stalled",
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="every workload at reduced size (< 3 min)"
    )
    parser.add_argument("--json", type=Path, help="write the results as JSON")
    parser.add_argument(
        "--gateway-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="pass ARG on to the gateways' `serve` (repeatable), e.g. --gateway-arg=--flag",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=WORKLOADS,
        help="run only this workload (repeatable); default: all",
    )
    args = parser.parse_args()
    ensure_commands("ssh", "sftp", "ssh-keygen", "socat")
    ensure_dockerd()
    image = ensure_sandbox_image()
    size = 64 * MB if args.quick else 1024 * MB
    repeats = 1 if args.quick else 3
    with tempfile.TemporaryDirectory(prefix="sandbox-ssh-bench-") as workdir:
        bench = Bench(
            quick=args.quick, image=image, workdir=Path(workdir), gateway_args=args.gateway_arg
        )
        try:
            targets = bench.targets()
            info = machine()
            print(
                f"sandbox-ssh benchmark ({'quick' if args.quick else 'full'}): {info}", flush=True
            )
            chosen = args.only or WORKLOADS
            runs: dict[str, Callable[[], None]] = {
                "throughput": lambda: workload_throughput(bench, targets, size, repeats),
                "cpu": lambda: workload_cpu(bench, targets, size),
                "sftp": lambda: workload_sftp(bench, targets, size, repeats),
                "sftp-requests": lambda: workload_sftp_requests(
                    bench, targets, 1000 if args.quick else 5000
                ),
                "forward": lambda: workload_forward(bench, targets, size, repeats),
                "latency": lambda: workload_latency(bench, targets, 30),
                "echo": lambda: workload_echo(bench, targets, 50 if args.quick else 200),
                "concurrency": lambda: workload_concurrency(
                    bench, targets, 50 if args.quick else 200
                ),
                "storm": lambda: workload_storm(bench, targets, 50),
                "starts": lambda: workload_starts(bench, 10 if args.quick else 50, 10),
                "workers": lambda: workload_workers(bench, size // 2),
                "neighbour": lambda: workload_neighbour(bench, targets, 30 if args.quick else 100),
                "stalled": lambda: workload_stalled(bench, 1024 * MB, 5 if args.quick else 15),
            }
            for name in WORKLOADS:
                if name in chosen:
                    runs[name]()
        except Exception:
            for log in sorted(Path(workdir).glob("gateway-*.log")):
                print(
                    f"--- {log.name} (last lines) ---\n"
                    + "".join(log.read_text().splitlines(True)[-15:])
                )
            raise
        finally:
            bench.cleanup()
        print_table(bench)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(
                json.dumps(
                    {
                        "mode": "quick" if args.quick else "full",
                        "machine": info,
                        "results": bench.results,
                    },
                    indent=2,
                )
            )
            print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
