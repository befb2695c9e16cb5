"""sshd's answer to a client identification string it refuses (RFC 4253 4.2).

asyncssh closes such a connection without a word; sshd first writes one line
saying why, and clients and scanners show it. This decides that line, for
exactly the lines asyncssh refuses.
"""

from __future__ import annotations

import re

# asyncssh's bounds: a line is looked for in the first 8 KiB; an accepted one is at most 255.
_MAX_LINE = 8192
_MAX_VERSION = 255
_ACCEPTED_PREFIXES = (b"SSH-2.0-", b"SSH-1.99-")
_VERSION = re.compile(rb"SSH-(\d+)\.(\d+)-[^\r\0]+")

INVALID = "Invalid SSH identification string."
MAJOR_MISMATCH = "Protocol major versions differ."


def refusal(received: bytes) -> str | None:
    """sshd's message for the client line at the start of ``received``; None while the line
    is incomplete or when it is accepted."""
    end = received.find(b"\n", 0, _MAX_LINE)
    if end < 0:
        return INVALID if len(received) >= _MAX_LINE else None
    line = received[:end].removesuffix(b"\r")
    if line.startswith(_ACCEPTED_PREFIXES) and len(line) <= _MAX_VERSION:
        return None
    version = _VERSION.fullmatch(line)
    if version is not None:
        major, minor = int(version.group(1)), int(version.group(2))
        if major != 2 and (major, minor) != (1, 99):
            return MAJOR_MISMATCH
    return INVALID
