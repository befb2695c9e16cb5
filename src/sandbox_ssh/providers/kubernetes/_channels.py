"""The channel framing of Kubernetes' exec WebSocket (``v4``/``v5.channel.k8s.io``).

Every binary message starts with one byte naming its channel. v5 adds a close
message (channel 255, then the channel closed), which is the only way to give a
process stdin EOF.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ...hooks import TerminalSize

V5_PROTOCOL = "v5.channel.k8s.io"
V4_PROTOCOL = "v4.channel.k8s.io"
OFFERED_PROTOCOLS = f"{V5_PROTOCOL},{V4_PROTOCOL}"

STDIN = 0
STDOUT = 1
STDERR = 2
STATUS = 3
RESIZE = 4
CLOSE = 255


def data_message(channel: int, data: bytes) -> bytes:
    return bytes([channel]) + data


def close_message(channel: int) -> bytes:
    return bytes([CLOSE, channel])


def resize_message(size: TerminalSize) -> bytes:
    return data_message(RESIZE, json.dumps({"Width": size.cols, "Height": size.rows}).encode())


def split_message(message: bytes) -> tuple[int, bytes]:
    if not message:
        raise ValueError("empty channel message")
    return message[0], message[1:]


@dataclass(frozen=True)
class ExitStatus:
    """What the status channel said: an exit code, or why the process never ran."""

    code: int | None
    failure: str | None = None


def parse_status(payload: bytes) -> ExitStatus:
    """A ``metav1.Status`` from the status channel.

    Success is exit code 0; a non-zero exit is ``NonZeroExitCode`` with the code
    in the ``ExitCode`` cause; anything else is a failure to start, with its message.
    """
    try:
        status = json.loads(payload)
    except ValueError:
        return ExitStatus(None, payload.decode(errors="replace").strip() or "unreadable status")
    if status.get("status") == "Success":
        return ExitStatus(0)
    details = status.get("details") or {}
    for cause in details.get("causes") or ():
        if cause.get("reason") == "ExitCode" and str(cause.get("message", "")).isdigit():
            return ExitStatus(int(cause["message"]))
    return ExitStatus(None, str(status.get("message") or "the process failed to start"))
