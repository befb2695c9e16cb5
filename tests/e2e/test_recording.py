"""--record-dir: sessions as asciicast v2 files, read back with the real asciinema package."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pexpect
import pytest
from asciinema.asciicast import open_from_url

from ..support.containers import Container
from ..support.gateway import CliGateway
from ..support.ssh import SSHClient
from ..support.wait import wait_until

PROMPT = "rec-prompt$ "
Recorded = tuple[CliGateway, SSHClient, Path]


@pytest.fixture
def record(tmp_path: Path, client_tools: None) -> Iterator[Callable[..., Recorded]]:
    started: list[CliGateway] = []

    def start(*args: str) -> Recorded:
        directory = tmp_path / "recordings"
        gateway = CliGateway(
            tmp_path / "host_key",
            "--record-dir",
            str(directory),
            "--audit-log",
            str(tmp_path / "audit.jsonl"),
            *args,
        )
        started.append(gateway)
        ssh = SSHClient(gateway.host, gateway.port, gateway.host_key_path, tmp_path / "client")
        return gateway, ssh, directory

    yield start
    for gateway in started:
        gateway.terminate()


def _casts(directory: Path, session_id: str) -> list[Path]:
    return sorted((directory / session_id).glob("*.cast"))


def _read(path: Path) -> tuple[dict[str, Any], list[list[Any]]]:
    with open_from_url(str(path)) as cast:
        return cast.v2_header, list(cast.events())


def _output(events: list[list[Any]]) -> str:
    return "".join(text for _, kind, text in events if kind == "o")


def _shell(ssh: SSHClient, session_id: str) -> pexpect.spawn:
    argv = ssh.ssh_argv(session_id, options=["-tt"])
    child = pexpect.spawn(argv[0], argv[1:], dimensions=(24, 80), timeout=20)
    child.sendline(f"export PS1='{PROMPT}'")
    child.expect_exact(PROMPT)
    child.expect_exact(PROMPT)
    return child


def test_a_pty_session_with_typing_and_a_resize_is_a_cast_asciinema_reads(
    record: Callable[..., Recorded], sandbox: Container, tmp_path: Path
) -> None:
    _, ssh, directory = record()
    child = _shell(ssh, sandbox.session_id)
    child.sendline("echo typed-$((6*7))")
    child.expect_exact("typed-42")
    child.expect_exact(PROMPT)
    # Written as the session runs: the output is on disk while it is still open.
    wait_until(lambda: _casts(directory, sandbox.session_id), message="no recording")
    (cast,) = _casts(directory, sandbox.session_id)
    wait_until(lambda: "typed-42" in cast.read_text(), message="output not written yet")
    child.setwinsize(40, 100)
    child.sendline("stty size")
    child.expect_exact("40 100")
    child.expect_exact(PROMPT)
    child.sendline("exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0

    header, events = _read(cast)
    assert (header["version"], header["width"], header["height"]) == (2, 80, 24)
    assert header["sandbox_ssh"]["session"] == sandbox.session_id
    assert sandbox.id.startswith(header["sandbox_ssh"]["sandbox"])
    assert header["sandbox_ssh"]["user"] == "root"
    assert isinstance(header["timestamp"], int)
    output = _output(events)
    assert "echo typed-$((6*7))" in output  # the terminal's echo of what was typed
    assert "typed-42" in output
    assert "40 100" in output
    assert [text for _, kind, text in events if kind == "r"] == ["100x40"]
    times = [event[0] for event in events]
    assert times == sorted(times)
    assert not [event for event in events if event[1] == "i"], "input is recorded by default"
    # asciinema's own player reads it back.
    played = subprocess.run(
        [sys.executable, "-m", "asciinema", "cat", str(cast)], capture_output=True, text=True
    )
    assert played.returncode == 0, played.stderr
    assert "typed-42" in played.stdout

    assert stat.S_IMODE(cast.stat().st_mode) == 0o600
    assert stat.S_IMODE(cast.parent.stat().st_mode) == 0o700
    audit = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    shells = [event for event in audit if event["event"] == "shell"]
    assert [event["recording"] for event in shells] == [str(cast)]


def test_input_is_recorded_only_when_asked(
    record: Callable[..., Recorded], sandbox: Container
) -> None:
    _, ssh, directory = record("--record-input")
    child = _shell(ssh, sandbox.session_id)
    child.sendline("echo typed-$((6*7))")
    child.expect_exact("typed-42")
    child.sendline("exit")
    child.expect(pexpect.EOF)
    child.close()
    (cast,) = _casts(directory, sandbox.session_id)
    _, events = _read(cast)
    typed = "".join(text for _, kind, text in events if kind == "i")
    assert "echo typed-$((6*7))\n" in typed


def test_past_the_size_cap_a_marker_ends_the_recording_and_the_session_goes_on(
    record: Callable[..., Recorded], sandbox: Container
) -> None:
    _, ssh, directory = record("--record-max-bytes", "4K")
    result = ssh.run(
        sandbox.session_id,
        "head -c 100000 /dev/zero | tr '\\0' x; echo; echo done-$((6*7))",
        options=["-tt"],
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(b"x") == 100000
    assert b"done-42" in result.stdout
    (cast,) = _casts(directory, sandbox.session_id)
    assert cast.stat().st_size <= 4096
    _, events = _read(cast)
    assert events[-1][1] == "m"
    assert "size limit" in events[-1][2]
    assert "done-42" not in _output(events)


def test_exec_sessions_are_recorded_only_with_record_exec(
    record: Callable[..., Recorded], sandbox: Container, tmp_path: Path
) -> None:
    _, ssh, directory = record()
    assert ssh.run(sandbox.session_id, "echo plain-exec").returncode == 0
    assert _casts(directory, sandbox.session_id) == []

    _, ssh, directory = record("--record", "exec")
    result = ssh.run(sandbox.session_id, "echo out-$((6*7)); echo err-$((6*7)) >&2")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"out-42\n"
    assert result.stderr == b"err-42\n"
    (cast,) = _casts(directory, sandbox.session_id)
    header, events = _read(cast)
    assert header["sandbox_ssh"]["command"] == "echo out-$((6*7)); echo err-$((6*7)) >&2"
    output = _output(events)
    assert "out-42" in output and "err-42" in output
