import subprocess

import pytest

from sandbox_ssh.providers import _posix


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


def test_pid_report_prints_the_pid_that_then_runs_the_command() -> None:
    result = subprocess.run(_posix.pid_report_argv(["sh", "-c", "echo $$"]), capture_output=True)
    reported, own = result.stdout.split()
    assert reported == own
