"""Bounds on what the gateway does for one sandbox: its files, its threads (pure logic
and the host's own files; the hostile-sandbox e2e suite attacks real sandboxes)."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from pathlib import Path

import pytest

from sandbox_ssh.providers import _hostns
from sandbox_ssh.providers._threads import SandboxTimeout, ThreadBudget

ME = os.getpid()  # our own root stands in for a sandbox's


def read(path: Path | str, limit: int = _hostns.MAX_FILE_BYTES) -> bytes:
    return asyncio.run(_hostns.read_file_in_root(ME, str(path), limit))


def test_a_regular_file_is_read_whole(tmp_path: Path) -> None:
    (tmp_path / "group").write_bytes(b"root:x:0:\n")
    assert read(tmp_path / "group") == b"root:x:0:\n"


def test_regression_fifo_etc_group_blocked_a_shared_thread(tmp_path: Path) -> None:
    """`rm /etc/group && mkfifo /etc/group` wedged the gateway for every tenant."""
    fifo = tmp_path / "group"
    os.mkfifo(fifo)
    with pytest.raises(_hostns.UnsafeSandboxFile, match="group in the sandbox is a named pipe"):
        read(fifo)
    assert _hostns.BUDGET.threads() == 0


@pytest.mark.parametrize(
    ("path", "kind"),
    [("/dev/zero", "a character device"), ("/proc/self/status", "a kernel file"), ("/", "dir")],
)
def test_regression_devices_and_kernel_files_in_place_of_etc_files(path: str, kind: str) -> None:
    with pytest.raises(_hostns.UnsafeSandboxFile, match=kind):
        read(path)


def test_regression_a_symlink_to_a_device_is_not_followed_into_it(tmp_path: Path) -> None:
    (tmp_path / "hosts").symlink_to("/dev/urandom")
    with pytest.raises(_hostns.UnsafeSandboxFile, match="character device"):
        read(tmp_path / "hosts")


def test_regression_a_giant_passwd_was_read_into_memory(tmp_path: Path) -> None:
    giant = tmp_path / "passwd"
    with giant.open("wb") as out:
        out.truncate(1 << 30)  # sparse: 1 GiB without the disk
    with pytest.raises(_hostns.UnsafeSandboxFile, match="larger than 1048576 bytes"):
        read(giant)


def test_regression_a_file_that_grows_while_read_is_cut_at_the_bound(tmp_path: Path) -> None:
    growing = tmp_path / "group"
    growing.write_bytes(b"a" * 100)
    with pytest.raises(_hostns.UnsafeSandboxFile, match="larger than 50 bytes"):
        read(growing, limit=50)


def test_regression_stuck_work_of_one_sandbox_held_every_thread() -> None:
    """A sandbox whose work never ends holds its own share only; others still run."""

    async def scenario() -> None:
        budget = ThreadBudget(per_sandbox=2, total=8, timeout=0.2)
        stuck = threading.Event()
        for _ in range(2):
            with pytest.raises(SandboxTimeout, match=r"did not answer within 0\.2 s"):
                await budget.run("hostile", stuck.wait)
        assert budget.threads("hostile") == 2  # still stuck, still counted
        with pytest.raises(SandboxTimeout, match="2 operations stuck already"):
            await budget.run("hostile", lambda: "never runs")
        assert await budget.run("healthy", lambda: "ran") == "ran"
        stuck.set()
        await asyncio.wait_for(budget.wait_idle(), 10)  # the stuck threads end, slots back
        assert await budget.run("hostile", lambda: "served again") == "served again"

    asyncio.run(scenario())


def test_regression_a_socket_made_after_its_caller_gave_up_leaked() -> None:
    async def scenario() -> None:
        budget = ThreadBudget(per_sandbox=1, total=1, timeout=0.1)
        late = threading.Event()
        made: list[socket.socket] = []

        def make() -> socket.socket:
            late.wait()
            made.append(socket.socket())
            return made[0]

        with pytest.raises(SandboxTimeout):
            await budget.run("s", make, discard=lambda s: s.close())
        late.set()
        await asyncio.wait_for(budget.wait_idle(), 10)
        assert made and made[0].fileno() == -1  # closed by the discard

    asyncio.run(scenario())


def test_the_total_bounds_every_sandbox_together() -> None:
    async def scenario() -> None:
        budget = ThreadBudget(per_sandbox=4, total=2, timeout=0.2)
        stuck = threading.Event()
        waits = [budget.run(f"s{i}", stuck.wait) for i in range(2)]
        results = await asyncio.gather(*waits, return_exceptions=True)
        assert all(isinstance(r, SandboxTimeout) for r in results)
        assert budget.threads() == 2
        with pytest.raises(SandboxTimeout):
            await budget.run("s3", lambda: None)
        stuck.set()

    asyncio.run(scenario())


def test_regression_a_fork_bomb_made_every_start_print_a_go_crash_dump(tmp_path: Path) -> None:
    """At its pids limit, a start is refused in one line instead of crashing runc's init."""
    from sandbox_ssh.providers._runtime._pids import pids_limit_reached

    cgroup = tmp_path / "pids"
    cgroup.mkdir()
    (cgroup / "pids.max").write_text("64\n")
    (cgroup / "pids.current").write_text("64\n")
    assert pids_limit_reached(str(cgroup)) == 64
    (cgroup / "pids.current").write_text("12\n")
    assert pids_limit_reached(str(cgroup)) is None
    (cgroup / "pids.max").write_text("max\n")
    assert pids_limit_reached(str(cgroup)) is None
    assert pids_limit_reached(None) is None
