import asyncio
import subprocess
from collections.abc import Awaitable, Callable

import pytest

from sandbox_ssh.hooks import OutputStream, SandboxError, TerminalSize
from sandbox_ssh.providers import _posix

from ..support.terminal import run_on_a_terminal

Receive = Callable[[], Awaitable[tuple[OutputStream, bytes] | None]]


def test_only_rfc4254_signal_names_are_sent() -> None:
    assert _posix.signal_argv(42, "TERM")[-2:] == ["TERM", "42"]
    for bad in ("9", "-KILL", "TERM; reboot", "SIGTERM", "STOP"):
        with pytest.raises(ValueError):
            _posix.signal_argv(42, bad)


def test_hangup_grace_is_counted_in_tenths() -> None:
    assert _posix.hangup_argv(7, 2.0)[-2:] == ["7", "20"]
    assert _posix.hangup_argv(7, -1)[-1] == "0"


def test_scripts_are_valid_posix_sh() -> None:
    for script in (_posix.HANGUP_SCRIPT, _posix.PID_REPORT_SCRIPT):
        assert subprocess.run(["sh", "-n", "-c", script]).returncode == 0


def test_regression_a_resize_before_the_pid_line_was_undone() -> None:
    """Docker's exec API: the terminal is sized before the PID line, after which alone the
    gateway resizes; the login step no longer sets a size over a resize."""
    argv = _posix.pid_report_argv(["stty", "size"], TerminalSize(cols=80, rows=40))
    lines = run_on_a_terminal(argv, rows=0, cols=0).split()
    assert lines[0].isdigit() and lines[1:] == ["40", "80"]


def test_pid_report_prints_the_pid_that_then_runs_the_command() -> None:
    result = subprocess.run(_posix.pid_report_argv(["sh", "-c", "echo $$"]), capture_output=True)
    reported, own = result.stdout.split()
    assert reported == own


def _feed(*chunks: tuple[OutputStream, bytes], then_hang: bool = False) -> Receive:
    queue = list(chunks)

    async def receive() -> tuple[OutputStream, bytes] | None:
        if queue:
            return queue.pop(0)
        if then_hang:
            await asyncio.Event().wait()
        return None

    return receive


def test_regression_a_login_that_prints_garbage_without_a_newline_grew_forever() -> None:
    flood = [(OutputStream.STDOUT, b"x" * 4096)] * 1000
    pid, pending = asyncio.run(_posix.read_pid_line(_feed(*flood, then_hang=True)))
    assert pid is None
    assert sum(len(data) for _, data in pending) <= 4096 + _posix.MAX_PID_LINE


def test_regression_a_login_that_never_answers_waited_forever() -> None:
    with pytest.raises(SandboxError, match=r"did not start the session within 0\.05 s"):
        asyncio.run(_posix.read_pid_line(_feed(then_hang=True), within=0.05))


def test_regression_a_login_that_floods_stderr_before_its_pid_line() -> None:
    flood = [(OutputStream.STDERR, b"e" * 65536)] * 4
    with pytest.raises(SandboxError, match="wrote too much before starting"):
        asyncio.run(_posix.read_pid_line(_feed(*flood, then_hang=True)))


def test_the_pid_line_and_what_follows_it() -> None:
    pid, pending = asyncio.run(
        _posix.read_pid_line(
            _feed((OutputStream.STDOUT, b"42\nhello"), (OutputStream.STDERR, b"e"))
        )
    )
    assert pid == 42 and pending == [(OutputStream.STDOUT, b"hello")]


def test_regression_a_whoami_that_prints_gigabytes() -> None:
    flood = [(OutputStream.STDOUT, b"0 0 root " * 8000)] * 100
    with pytest.raises(SandboxError, match="answer was longer than 65536 bytes"):
        asyncio.run(_posix.collect_short(_feed(*flood)))


def test_regression_a_control_exec_that_never_ends() -> None:
    with pytest.raises(SandboxError, match=r"did not answer within 0\.05 s"):
        asyncio.run(_posix.collect_short(_feed(then_hang=True), within=0.05))
