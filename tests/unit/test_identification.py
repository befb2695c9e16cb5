"""sshd's reasons for refusing a client identification string (kex.c, V_9_2_P1)."""

from __future__ import annotations

import pytest

from sandbox_ssh._ssh.identification import INVALID, MAJOR_MISMATCH, refusal


@pytest.mark.parametrize(
    ("received", "expected"),
    [
        (b"SSH-2.0-OpenSSH_9.2p1\r\n", None),
        (b"SSH-2.0-x\n", None),
        (b"SSH-1.99-old\r\n", None),
        (b"SSH-2.0-incomplete", None),  # no line yet: wait
        (b"\n", INVALID),
        (b"\r\n", INVALID),
        (b"hello\r\n", INVALID),
        (b"SSH-2.0\r\n", INVALID),  # no software version
        (b"SSH-2.0-" + b"x" * 300 + b"\n", INVALID),  # beyond asyncssh's 255
        (b"x" * 8192, INVALID),  # no line in 8 KiB
        (b"SSH-1.5-HALLO\n", MAJOR_MISMATCH),
        (b"SSH-3.0-x\n", MAJOR_MISMATCH),
        (b"SSH-2.1-x\n", INVALID),  # sshd takes any 2.x; asyncssh refuses it, so say so
    ],
)
def test_refusal_is_sshds_for_exactly_what_asyncssh_refuses(
    received: bytes, expected: str | None
) -> None:
    assert refusal(received) == expected
