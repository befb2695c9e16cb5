"""What happens when a connection ends, however it ends."""

from __future__ import annotations

import signal
import subprocess
import threading
from collections import Counter

import asyncssh
import pytest

from ..conftest import GatewayFactory
from ..support.containers import Container, Containers
from ..support.ssh import SSHClient
from ..support.wait import wait_until


class RecordingTracker:
    """Counts track() and release() calls per connection."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.tracked: list[str] = []
        self.releases: Counter[int] = Counter()

    def track(self, session_id: str):  # type: ignore[no-untyped-def]
        with self._lock:
            index = len(self.tracked)
            self.tracked.append(session_id)

        def release() -> None:
            with self._lock:
                self.releases[index] += 1

        return release

    def snapshot(self) -> tuple[list[str], Counter[int]]:
        with self._lock:
            return list(self.tracked), Counter(self.releases)


def started(
    ssh: SSHClient, session_id: str, command: str, marker: str, *options: str
) -> subprocess.Popen[bytes]:
    """Run ``command`` after printing ``marker``, and return once the marker arrived."""
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    client = ssh.popen(session_id, f"echo {marker}; {command}", options=list(options), **pipes)
    assert client.stdout is not None
    assert client.stdout.readline().strip() == marker.encode()
    return client


def test_tracker_release_is_called_once_per_connection(
    gateway_factory: GatewayFactory, containers: Containers
) -> None:
    tracker = RecordingTracker()
    gw = gateway_factory(connection_tracker=tracker)
    sandbox = containers.start()
    for _ in range(3):
        assert gw.client.run(sandbox.session_id, "true").returncode == 0
    wait_until(lambda: sum(tracker.snapshot()[1].values()) == 3)
    tracked, releases = tracker.snapshot()
    assert tracked == [sandbox.session_id] * 3
    assert releases == Counter({0: 1, 1: 1, 2: 1})


def test_tracker_release_when_client_is_killed(
    gateway_factory: GatewayFactory, containers: Containers
) -> None:
    tracker = RecordingTracker()
    gw = gateway_factory(connection_tracker=tracker)
    sandbox = containers.start()
    client = started(gw.client, sandbox.session_id, "sleep 600", "running")
    assert tracker.snapshot()[0] == [sandbox.session_id]
    client.kill()
    client.wait()
    wait_until(lambda: tracker.snapshot()[1] == Counter({0: 1}), message="release never came")


def test_rejected_connection_is_not_tracked(gateway_factory: GatewayFactory) -> None:
    tracker = RecordingTracker()
    gw = gateway_factory(connection_tracker=tracker)
    assert gw.client.run("no-such-session", "true").returncode == 255
    assert tracker.snapshot() == ([], Counter())


def test_no_process_is_left_after_a_disconnect_but_nohup_survives(
    ssh: SSHClient, sandbox: Container
) -> None:
    command = (
        "nohup sleep 1002 >/dev/null 2>&1 & setsid sleep 1003 >/dev/null 2>&1 </dev/null & "
        "sleep 1001 & sleep 1000"
    )
    client = started(ssh, sandbox.session_id, command, "running")
    wait_until(lambda: {"sleep 1002", "sleep 1003"} <= set(sandbox.processes()))
    client.kill()
    client.wait()

    def session_gone() -> list[str] | None:
        live = sandbox.processes()
        return live if "sleep 1000" not in live and "sleep 1001" not in live else None

    left = wait_until(session_gone, message="the session's processes outlived the client")
    assert "sleep 1002" in left  # nohup: deliberately immune to hangup
    assert "sleep 1003" in left  # setsid: deliberately detached


def test_interactive_shell_is_hung_up_when_the_client_dies(
    ssh: SSHClient, sandbox: Container
) -> None:
    client = ssh.popen(
        sandbox.session_id,
        options=["-tt"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert client.stdin is not None and client.stdout is not None
    client.stdin.write(b"sleep 1004 & sleep 1005 &\necho mark-$((6*7))\n")
    client.stdin.flush()
    while b"mark-42" not in client.stdout.readline():
        pass
    client.send_signal(signal.SIGKILL)
    client.wait()
    wait_until(
        lambda: (
            not any(
                p.startswith(("sleep 1004", "sleep 1005", "-bash", "/bin/bash"))
                for p in sandbox.processes()
            )
        ),
        message="the interactive session outlived the client",
    )


def test_server_stop_ends_live_connections(
    gateway_factory: GatewayFactory, containers: Containers
) -> None:
    tracker = RecordingTracker()
    gw = gateway_factory(connection_tracker=tracker)
    sandbox = containers.start()
    client = started(gw.client, sandbox.session_id, "sleep 1006", "running")
    gw.gateway.stop()
    assert client.wait(20) == 255
    assert tracker.snapshot()[1] == Counter({0: 1})
    assert "sleep 1006" not in sandbox.processes()


@pytest.mark.parametrize(("name", "status"), [("TERM", 143), ("INT", 130), ("USR1", 138)])
def test_signal_request_reaches_the_process(
    gateway_factory: GatewayFactory, containers: Containers, exec_path: str, name: str, status: int
) -> None:
    # The OpenSSH client cannot send "signal" requests; asyncssh's client can.
    gw = gateway_factory()
    sandbox = containers.start()
    session_id = sandbox.session_id

    async def scenario() -> asyncssh.SSHCompletedProcess:
        async with asyncssh.connect(
            gw.gateway.host, gw.gateway.port, username=session_id, known_hosts=None
        ) as conn:
            process = await conn.create_process("echo ready; exec sleep 600")
            assert (await process.stdout.readline()) == "ready\n"
            process.send_signal(name)
            return await process.wait()

    completed = gw.gateway.loop.run(scenario())
    if exec_path == "runtime":
        # As sshd: the process was killed by the signal, and exit-signal says which.
        assert completed.exit_signal is not None and completed.exit_signal[:2] == (name, False)
        assert completed.returncode == -signal.Signals["SIG" + name]
    else:
        # Docker's exec API only knows 128+N.
        assert completed.exit_status == status


def _killed_client_leaves(
    ssh: SSHClient, sandbox: Container, command: str, gone: str, running: tuple[str, ...] = ()
) -> list[str]:
    """Run ``command`` until ``running`` all run, kill the client, and return what lives
    once ``gone`` has gone."""
    client = started(ssh, sandbox.session_id, command, "running")
    wait_until(lambda: all(p in sandbox.processes() for p in (gone, *running)))
    client.kill()
    client.wait()

    def settled() -> list[str] | None:
        live = sandbox.processes()
        return live if gone not in live else None

    return wait_until(settled, message=f"{gone!r} outlived the killed client")


def test_client_drop_spares_a_background_job_that_let_go_of_the_session(
    ssh: SSHClient, sandbox: Container
) -> None:
    # The reproduction: under sshd, `sleep 401` keeps running.
    command = "sleep 401 </dev/null >/dev/null 2>&1 & sleep 100"
    live = _killed_client_leaves(ssh, sandbox, command, gone="sleep 100", running=("sleep 401",))
    assert "sleep 401" in live


ZED_LIKE_DAEMON = (
    "import os, time\n"
    "if os.fork() == 0:\n"
    "    null = os.open('/dev/null', os.O_RDWR)\n"
    "    for fd in (0, 1, 2):\n"
    "        os.dup2(null, fd)\n"
    "    os.execvp('sleep', ['sleep', '402'])\n"
)


def test_client_drop_spares_a_zed_like_daemon(ssh: SSHClient, sandbox: Container) -> None:
    # Zed's remote server: one fork, stdio to /dev/null, no setsid; its reconnection after a
    # network drop depends on it surviving.
    command = f'python3 -c "{ZED_LIKE_DAEMON}"; sleep 601'
    live = _killed_client_leaves(ssh, sandbox, command, gone="sleep 601", running=("sleep 402",))
    assert "sleep 402" in live


def test_client_drop_ends_a_command_that_holds_the_session(
    ssh: SSHClient, sandbox: Container
) -> None:
    live = _killed_client_leaves(ssh, sandbox, "sleep 311", gone="sleep 311")
    assert not any(p.startswith("sleep 311") for p in live)


def test_client_drop_ends_a_background_job_that_still_writes_to_the_session(
    ssh: SSHClient, sandbox: Container
) -> None:
    # Not redirected, so it holds the session's stdout even in its own session.
    command = "setsid sleep 312 & sleep 313"
    live = _killed_client_leaves(ssh, sandbox, command, gone="sleep 313", running=("sleep 312",))
    wait_until(lambda: "sleep 312" not in sandbox.processes(), message="sleep 312 survived")
    assert "sleep 313" not in live
