"""The test harness's reader of a gateway's log lines (tests/support/gateway.py)."""

from __future__ import annotations

import re
import subprocess
import time

from ..support.gateway import StderrLines

LISTENING = re.compile(r"listening on (\S+):(\d+)")


def test_regression_a_line_written_with_the_one_before_went_unseen() -> None:
    """`kubernetes: serving pods ...` and `listening on ...` written in one go: a buffered
    readline() took both, returned the first, and select() then waited 30 s on an empty
    pipe for the second (the emulated-Kubernetes fixture's "30 s to listen")."""
    child = subprocess.Popen(
        ["sh", "-c", "printf 'serving pods\\nlistening on 127.0.0.1:4242 (auth: none)\\n'; "
         "exec sleep 60"],
        stderr=subprocess.STDOUT,
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert child.stdout is not None
        lines = StderrLines(child.stdout.fileno())
        started = time.monotonic()
        match = lines.wait_for(LISTENING, timeout=10)
        assert time.monotonic() - started < 5
        assert match.group(2) == "4242"
        assert lines.text() == "serving pods\nlistening on 127.0.0.1:4242 (auth: none)\n"
    finally:
        child.kill()
        child.wait()


def test_a_line_split_across_reads_is_one_line_and_the_last_needs_no_newline() -> None:
    child = subprocess.Popen(
        ["sh", "-c", "printf 'listen'; sleep 0.2; printf 'ing on ::1:7\\nend'"],
        stdout=subprocess.PIPE,
    )
    assert child.stdout is not None
    lines = StderrLines(child.stdout.fileno())
    assert lines.wait_for(LISTENING, timeout=10).group(2) == "7"
    lines.collect()
    child.wait()
    lines.join(10)
    assert lines.text() == "listening on ::1:7\nend"
