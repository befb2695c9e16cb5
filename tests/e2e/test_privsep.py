"""Privilege separation: `sandbox-ssh serve` as root reads clients as an unprivileged front,
and root stays with a broker that has no network socket (issue 27).

What each test asserts is what an operator (or an attacker in the front) could check:
the processes' credentials in /proc, who holds which socket, what a confined process is
refused, what the broker answers to malformed or foreign requests, and what sessions
see when either side dies.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import asyncssh
import pytest

from sandbox_ssh._broker import protocol
from sandbox_ssh._privsep.user import DEFAULT_USER

from ..support.containers import Container, Containers
from ..support.gateway import CliGateway, LoopThread
from ..support.ssh import SSHClient
from ..support.system import REPO_ROOT
from ..support.wait import wait_until

pytestmark = pytest.mark.path_independent


def status_of(pid: int) -> dict[str, str]:
    return {
        line.split(":", 1)[0]: line.split(":", 1)[1].strip()
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if ":" in line
    }


def socket_inodes(pid: int) -> set[int]:
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(int(target[8:-1]))
    return found


def inet_sockets(pid: int) -> dict[int, tuple[int, str]]:
    """inode -> (local port, state) of every TCP or UDP socket in the process's namespace."""
    found: dict[int, tuple[int, str]] = {}
    for table in ("tcp", "tcp6", "udp", "udp6"):
        lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        for line in lines:
            fields = line.split()
            found[int(fields[9])] = (int(fields[1].rsplit(":", 1)[1], 16), fields[3])
    return found


def front_pids(gateway: CliGateway, count: int) -> list[int]:
    text = gateway.wait_for_log(lambda log: len(CliGateway.FRONT.findall(log)) >= count)
    return [int(pid) for pid in CliGateway.FRONT.findall(text)]


def client_for(gateway: CliGateway, tmp_path: Path) -> SSHClient:
    return SSHClient(gateway.host, gateway.port, gateway.host_key_path, tmp_path / "client")


def test_fronts_read_clients_unprivileged_and_only_the_broker_holds_root(
    tmp_path: Path, sandbox: Container, client_tools: None
) -> None:
    with CliGateway(tmp_path / "host_key", "--workers", "2") as gateway:
        fronts = front_pids(gateway, 2)
        ssh = client_for(gateway, tmp_path)
        live = ssh.popen(
            sandbox.session_id, "echo up; sleep 30", stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert live.stdout is not None and live.stdout.readline() == b"up\n"
        # The fronts: another user, every id; no groups, no capability in any set.
        for pid in fronts:
            status = status_of(pid)
            uids, gids = set(status["Uid"].split()), set(status["Gid"].split())
            assert len(uids) == 1 and uids != {"0"} and len(gids) == 1 and gids != {"0"}
            assert status["Groups"] == ""
            for capabilities in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
                assert int(status[capabilities], 16) == 0, (capabilities, status[capabilities])
            assert status["NoNewPrivs"] == "1" and status["Seccomp"] == "2"
            assert os.stat(f"/proc/{pid}").st_uid == int(uids.pop())
        # The broker (serve's own process): root, the fronts' parent, and no network socket.
        broker = gateway.process.pid
        assert status_of(broker)["Uid"].split()[0] == "0"
        assert all(int(status_of(pid)["PPid"]) == broker for pid in fronts)
        inet = inet_sockets(broker)
        assert not socket_inodes(broker) & set(inet), "the broker holds a TCP or UDP socket"
        # No root process holds the listening socket or a client's connection: every holder
        # of a socket on the gateway's port is a front.
        gateway_port = {inode for inode, (port, _) in inet.items() if port == gateway.port}
        assert gateway_port
        holders = {
            int(pid)
            for pid in os.listdir("/proc")
            if pid.isdigit() and _holds(int(pid), gateway_port)
        }
        assert holders and holders <= set(fronts), (holders, fronts)
        live.kill()
        live.wait()


def _holds(pid: int, inodes: set[int]) -> bool:
    try:
        return bool(socket_inodes(pid) & inodes)
    except OSError:
        return False


def test_a_confined_front_is_refused_exec_ptrace_mounts_namespaces_modules_and_kexec(
    tmp_path: Path,
) -> None:
    allowed = tmp_path / "state"
    allowed.mkdir()
    subprocess.run(["useradd", "--system", DEFAULT_USER], capture_output=True)  # may exist
    os.chown(allowed, *_ids(DEFAULT_USER))
    outside = Path("/tmp")  # writable by everyone: only Landlock stops the front
    probe = subprocess.run(
        [sys.executable, "-m", "tests.support.confined_probe", str(allowed), str(outside)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.returncode == 0, probe.stderr
    report = json.loads(probe.stdout.splitlines()[-1])
    status, attempts = report["status"], report["attempts"]
    assert status["Uid"].split()[0] != "0" and status["NoNewPrivs"] == "1"
    assert status["Seccomp"] == "2"
    assert all(int(status[c], 16) == 0 for c in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"))
    for refused in (
        "execve",
        "ptrace",
        "mount",
        "setns",
        "unshare",
        "init_module",
        "finit_module",
        "kexec_load",
    ):
        assert attempts[refused] == "EPERM", (refused, attempts)
    assert attempts["io_uring_setup"] == "ENOSYS"  # libuv falls back to its thread pool
    assert attempts["engine_socket"] in ("EACCES", "absent")
    assert attempts["read_shadow"] == "EACCES"
    assert attempts["write_outside"] == "EACCES"  # Landlock: only its state and logs
    assert attempts["write_allowed"] == "ok"
    assert attempts["thread"] == "ok"  # threads still start (clone without namespaces)
    assert not (outside / "front-wrote-here").exists()


def _ids(name: str) -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam(name)
    return entry.pw_uid, entry.pw_gid


# The broker, asked directly as a front would (or a compromised one).


def _ask(sock: socket.socket, message: object, timeout: float = 30) -> dict[str, object]:
    sock.settimeout(timeout)
    sock.send(json.dumps(message).encode())
    data, _, _, _ = sock.recvmsg(1 << 16, socket.CMSG_SPACE(16))
    reply: dict[str, object] = json.loads(data)
    return reply


@pytest.fixture
def two_fronts(sandbox_image: str) -> tuple[socket.socket, socket.socket, subprocess.Popen[bytes]]:
    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) for _ in range(2)]
    broker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sandbox_ssh._broker",
            *(arg for _, theirs in pairs for arg in ("--front", str(theirs.fileno()))),
        ],
        pass_fds=[theirs.fileno() for _, theirs in pairs],
        stderr=subprocess.PIPE,
    )
    for _, theirs in pairs:
        theirs.close()
    return pairs[0][0], pairs[1][0], broker


def test_the_broker_refuses_malformed_requests_and_goes_on(
    two_fronts: tuple[socket.socket, socket.socket, subprocess.Popen[bytes]],
) -> None:
    front, other, broker = two_fronts
    try:
        front.send(b"not json at all")  # no id to answer: refused in the broker's log
        front.send(b"x" * (protocol.MAX_DATAGRAM + 100))  # over the datagram bound
        refusals = {
            1: {"id": 1, "op": "format_disk"},
            2: {"id": 2, "op": "find", "session_id": 12},
            3: {"id": 3, "op": "find", "session_id": "s", "pid": 1},
            4: {"id": 4, "op": "connect_unix", "sandbox": "container-id", "path": "/x", "user": {}},
            5: {"id": 5, "op": "start", "sandbox": 1, "spec": {"argv": "sh"}},
            6: {"id": 6, "op": "resize", "process": 1, "cols": 0, "rows": 10**9},
        }
        for request_id, message in refusals.items():
            reply = _ask(front, message)
            assert reply["id"] == request_id and reply["kind"] == "bad_request", reply
            assert "\n" not in str(reply["error"])
        # A handle the broker never issued: no PID, path or container ID reaches it.
        reply = _ask(front, {"id": 7, "op": "tcp_sockets", "sandbox": 99, "host": "h"})
        assert reply["kind"] == "stale_handle", reply
        # After all that, it still serves.
        assert _ask(front, {"id": 8, "op": "find", "session_id": "nobody-here"}) == {
            "id": 8,
            "result": {"sandbox": None},
        }
    finally:
        front.close()
        other.close()
        broker.wait(30)


def test_a_handle_belongs_to_the_front_that_asked_for_it(
    two_fronts: tuple[socket.socket, socket.socket, subprocess.Popen[bytes]],
    containers: Containers,
) -> None:
    front, other, broker = two_fronts
    sandbox = containers.start()
    try:
        found = _ask(front, {"id": 1, "op": "find", "session_id": sandbox.session_id})
        handle = found["result"]["sandbox"]["handle"]  # type: ignore[index]
        asked = {"op": "tcp_sockets", "sandbox": handle, "host": "127.0.0.1"}
        stolen = _ask(other, {"id": 1, **asked})
        assert stolen["kind"] == "stale_handle", stolen
        mine = _ask(front, {"id": 2, **asked})
        assert mine["result"] == {"addresses": ["127.0.0.1"]}, mine  # and its socket
    finally:
        front.close()
        other.close()
        broker.wait(30)


# Faults.


def test_the_broker_dies_new_sessions_are_refused_live_ones_do_not_hang_serve_exits_nonzero(
    tmp_path: Path, sandbox: Container, loop_thread: LoopThread, exec_path: str
) -> None:
    gateway = CliGateway(tmp_path / "host_key")
    (front,) = front_pids(gateway, 1)

    async def scenario() -> tuple[asyncssh.SSHCompletedProcess, str, int | None]:
        async with asyncssh.connect(
            gateway.host,
            gateway.port,
            username=sandbox.session_id,
            known_hosts=None,
            encoding=None,
        ) as conn:
            live = await conn.create_process("echo up; read line; echo got $line; sleep 60")
            assert await live.stdout.readline() == b"up\n"
            gateway.process.kill()  # the broker: serve's own process
            await asyncio.to_thread(gateway.process.wait)
            await asyncio.to_thread(
                gateway.wait_for_log, lambda text: "privileged helper is not running" in text
            )
            # A new session on the live connection: refused, in one line.
            refused = await conn.run("true")
            # The live session does not hang. On the runtime path its process was the
            # broker's shim's, hung up as on a connection loss; on the API path it goes on.
            answer = ""
            if exec_path == "api":
                live.stdin.write(b"still here\n")
                answer = (await live.stdout.readline()).decode()
                await asyncio.to_thread(sandbox.exec, "pkill", "-f", "sleep 60")
            await asyncio.wait_for(live.wait_closed(), 30)
            return refused, answer, live.exit_status

    refused, answer, status = loop_thread.run(scenario(), timeout=120)
    assert gateway.process.returncode != 0  # serve exits non-zero: a supervisor restarts it
    assert refused.exit_status == 255
    stderr = refused.stderr if isinstance(refused.stderr, bytes) else b""
    lines = [line for line in stderr.decode().splitlines() if line]
    assert lines == ["sandbox-ssh: the gateway's privileged helper is not running"], lines
    assert status == 255
    if exec_path == "api":
        assert answer == "got still here\n"
    # The front, its connection over, exits (non-zero), having logged the loss once.
    wait_until(lambda: not Path(f"/proc/{front}").exists(), timeout=30)
    assert gateway.log_text().count("privileged helper is not running (") == 1


def test_a_front_dies_and_the_broker_hangs_up_its_sessions(
    tmp_path: Path, sandbox: Container, client_tools: None
) -> None:
    gateway = CliGateway(tmp_path / "host_key")
    (front,) = front_pids(gateway, 1)
    ssh = client_for(gateway, tmp_path)
    live = ssh.popen(
        sandbox.session_id, "echo up; sleep 311", stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert live.stdout is not None and live.stdout.readline() == b"up\n"
    os.kill(front, signal.SIGKILL)
    wait_until(lambda: "sleep 311" not in sandbox.processes(), timeout=30)
    live.wait(30)
    # serve (the broker) ends with it, non-zero: the front did not exit by itself.
    assert gateway.process.wait(30) != 0
    log = gateway.log_text()
    gone = re.findall(r"front 1 \(pid \d+\) gone \(([^)]*)\): hanging up its (\d+) process", log)
    assert gone == [("its connection closed", "1")], log
