"""Dropping asyncssh's CBC-era IGNORE padding, and only that."""

from __future__ import annotations

from typing import Any, cast

import asyncssh
from asyncssh.constants import MSG_CHANNEL_DATA, MSG_IGNORE

from sandbox_ssh._ssh.packets import is_cbc, skip_cbc_ignore_padding


class RecordingConnection:
    def __init__(self, cipher: str) -> None:
        self.cipher = cipher
        self.sent: list[int] = []

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.cipher if name == "send_cipher" else default

    def send_packet(self, pkttype: int, *args: bytes, **kwargs: Any) -> None:
        self.sent.append(pkttype)


def send_three(conn: RecordingConnection) -> list[int]:
    skip_cbc_ignore_padding(cast(asyncssh.SSHServerConnection, conn))
    conn.send_packet(MSG_IGNORE, b"\x00\x00\x00\x00")
    conn.send_packet(MSG_CHANNEL_DATA, b"\x00\x00\x00\x01", b"\x00\x00\x00\x01x")
    conn.send_packet(MSG_IGNORE, b"\x00\x00\x00\x03abc")  # a deliberate IGNORE stays
    return conn.sent


def test_only_the_empty_ignore_is_dropped() -> None:
    assert send_three(RecordingConnection("chacha20-poly1305@openssh.com")) == [
        MSG_CHANNEL_DATA,
        MSG_IGNORE,
    ]


def test_cbc_keeps_its_ignore_padding() -> None:
    assert send_three(RecordingConnection("aes128-cbc")) == [
        MSG_IGNORE,
        MSG_CHANNEL_DATA,
        MSG_IGNORE,
    ]


def test_cbc_names() -> None:
    assert is_cbc("aes256-cbc") and is_cbc("rijndael-cbc@lysator.liu.se")
    assert not is_cbc("aes128-ctr") and not is_cbc("aes128-gcm@openssh.com")
    assert not is_cbc("")
