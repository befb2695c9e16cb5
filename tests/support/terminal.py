"""Commands run on a real pseudo-terminal, for the login steps' handling of its size."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import termios


def run_on_a_terminal(argv: list[str], rows: int, cols: int) -> str:
    """Run ``argv`` with stdio on a new pseudo-terminal of that size; its output."""
    master, slave = pty.openpty()
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    try:
        process = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True
        )
        os.close(slave)
        output = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the terminal's last holder closed it
                break
            if not chunk:
                break
            output += chunk
        process.wait(10)
    finally:
        os.close(master)
    return output.decode().replace("\r\n", "\n")
