"""The asyncssh internals the gateway patches, each pinned to the installed asyncssh."""

from __future__ import annotations

import asyncio
import inspect
import os
from typing import Any, cast

import asyncssh
import asyncssh.channel
import asyncssh.connection
import asyncssh.encryption
import asyncssh.kex
import asyncssh.kex_dh
import asyncssh.packet
import asyncssh.public_key
import pytest
from asyncssh.constants import MSG_CHANNEL_DATA, MSG_IGNORE, MSG_KEXINIT
from asyncssh.crypto import ChachaCipher

from sandbox_ssh._ssh.chacha import FastChachaCipher
from sandbox_ssh._ssh.internals import (
    _first_choices,
    coalesce_writes,
    is_cbc,
    skip_cbc_ignore_padding,
    use_fast_chacha,
)


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


# --- Every asyncssh internal the gateway relies on, pinned to the installed asyncssh.


def test_the_internals_used_still_exist() -> None:
    connection = asyncssh.connection.SSHConnection
    assert callable(connection._send)  # coalesce_writes
    assert "self._send(packet + mac)" in inspect.getsource(connection.send_packet)
    assert "self._transport" in inspect.getsource(connection._send)
    assert "self._send_encryption: Optional[Encryption] = None" in inspect.getsource(
        connection.__init__
    )
    assert "ChachaCipher(key)" in inspect.getsource(asyncssh.encryption.ChachaEncryption.new)
    assert list(inspect.signature(asyncssh.channel.SSHChannel._report_response).parameters) == [
        "self",
        "result",
    ]
    assert inspect.iscoroutinefunction(connection._make_keepalive_request)
    # follow_rfc_kex_guess: KEXINIT's handler is a per-instance lookup of a coroutine, and
    # _ignore_first_kex is what the receive path consults for the guessed packet.
    assert inspect.iscoroutinefunction(connection._packet_handlers[MSG_KEXINIT])
    assert "self._packet_handlers[pkttype]" in inspect.getsource(
        asyncssh.packet.SSHPacketHandler.process_packet
    )
    assert "self._ignore_first_kex" in inspect.getsource(connection._recv_packet)
    assert "self._server_kexinit = packet" in inspect.getsource(connection._send_kexinit)
    server = asyncssh.connection.SSHServerConnection
    assert list(inspect.signature(server.validate_public_key).parameters) == [
        "self",
        "username",
        "key_data",
        "msg",
        "signature",
    ]
    # explain_refused_identification: the receive handler starts as _recv_version, which
    # reads the client's line from _inpbuf and force-closes on one it refuses.
    assert "self._recv_handler = self._recv_version" in inspect.getsource(connection.__init__)
    receive_version = inspect.getsource(connection._recv_version)
    assert "self._inpbuf" in receive_version and "self._force_close(" in receive_version
    assert "b'SSH-2.0-'" in receive_version and "b'SSH-1.99-'" in receive_version
    assert asyncssh.connection._MAX_BANNER_LINE_LEN == 8192
    assert asyncssh.connection._MAX_VERSION_LINE_LEN == 255
    # offer_sntrup761: asyncssh's hybrid key exchange takes the KEM class and its name, and
    # registers sntrup761 this way itself when it has liboqs.
    kex_dh_source = inspect.getsource(asyncssh.kex_dh)
    assert "(SNTRUP, b'sntrup761', Curve25519DH)" in kex_dh_source
    assert "class _KexHybridECDH(" in kex_dh_source
    assert list(inspect.signature(asyncssh.kex.register_kex_alg).parameters) == [
        "alg",
        "handler",
        "hash_alg",
        "args",
        "default",
    ]
    # answered_in_order: global requests wait in _global_request_queue until
    # _report_global_response pops them, which it does through self.
    assert "self._global_request_queue.append(" in inspect.getsource(
        connection._process_global_request
    )
    assert "self._global_request_queue.pop(0)" in inspect.getsource(
        connection._report_global_response
    )
    assert "self._report_global_response(" in inspect.getsource(
        connection._service_next_global_request
    )
    # replace_agent_listener / open_agent_channel: the session channel awaits the
    # connection's create_agent_listener for auth-agent-req (replying once it is done, so
    # the shell or exec request after it waits), and create_agent_channel makes the
    # client-bound channel.
    agent_request = asyncssh.channel.SSHServerChannel._finish_agent_req_request
    assert "await self._conn.create_agent_listener()" in inspect.getsource(agent_request)
    assert inspect.iscoroutinefunction(server.create_agent_listener)
    assert "self" in inspect.signature(server.create_agent_channel).parameters
    assert inspect.iscoroutinefunction(asyncssh.channel.SSHAgentChannel.open)
    # accept_only_signature_algorithms (through validate_public_key): asyncssh verifies the
    # user's signature with the key itself, which takes any algorithm the key supports, and
    # only its server-sig-algs extension names the configured list.
    validate = inspect.getsource(server.validate_public_key)
    assert "key.verify(String(self._session_id) + msg, signature)" in validate
    assert "if sig_algorithm not in self.all_sig_algorithms:" in inspect.getsource(
        asyncssh.public_key.SSHKey.verify
    )
    # certificate_signature_algorithm: an OpenSSH certificate ends with the CA key, then
    # the CA's signature.
    construct = inspect.getsource(asyncssh.public_key.SSHOpenSSHCertificate.construct)
    assert "signing_key = decode_ssh_public_key(packet.get_string())" in construct
    assert "signature = packet.get_string()\n        packet.check_end()" in construct


def test_fast_chacha_is_what_new_keys_get() -> None:
    use_fast_chacha()
    encryption = asyncssh.encryption.ChachaEncryption.new("chacha20-poly1305", os.urandom(64), b"")
    assert isinstance(encryption._cipher, FastChachaCipher)


@pytest.mark.parametrize("size", [0, 1, 15, 16, 4096, 32768 + 13])
def test_fast_chacha_interoperates_with_asyncssh_byte_for_byte(size: int) -> None:
    key, nonce = os.urandom(64), os.urandom(8)
    ours, theirs = FastChachaCipher(key), ChachaCipher(key)
    header, data = os.urandom(4), os.urandom(size)
    assert ours.encrypt_and_sign(header, data, nonce) == theirs.encrypt_and_sign(
        header, data, nonce
    )
    sealed, tag = ours.encrypt_and_sign(header, data, nonce)
    assert theirs.verify_and_decrypt(sealed[:4], sealed[4:], nonce, tag) == data
    assert ours.verify_and_decrypt(sealed[:4], sealed[4:], nonce, tag) == data
    assert ours.decrypt_header(sealed[:4], nonce) == header
    forged = bytes([tag[0] ^ 1]) + tag[1:]
    assert ours.verify_and_decrypt(sealed[:4], sealed[4:], nonce, forged) is None


def test_coalesced_writes_deliver_everything_in_order_with_fewer_writes() -> None:
    async def scenario() -> tuple[bytes, int, int]:
        writes: list[int] = []
        packets = 0

        class Server(asyncssh.SSHServer):
            def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
                nonlocal packets
                skip_cbc_ignore_padding(conn)
                coalesce_writes(conn)
                transport: Any = conn._transport
                original = transport.writelines

                def counted(batch: list[bytes]) -> None:
                    writes.append(len(batch))
                    original(batch)

                transport.writelines = counted

            def begin_auth(self, username: str) -> bool:
                return False

        async def handler(process: asyncssh.SSHServerProcess[bytes]) -> None:
            process.stdout.write(bytes(range(256)) * 1024)  # 256 KiB: several packets
            process.exit(0)

        key = asyncssh.generate_private_key("ssh-ed25519")
        server = await asyncssh.create_server(
            Server, "127.0.0.1", 0, server_host_keys=[key], process_factory=handler, encoding=None
        )
        port = server.sockets[0].getsockname()[1]
        async with asyncssh.connect(
            "127.0.0.1", port, username="x", known_hosts=None, encoding=None
        ) as conn:
            result = await conn.run("anything")
        server.close()
        await server.wait_closed()
        packets = sum(writes)
        return cast(bytes, result.stdout), len(writes), packets

    output, write_calls, packets = asyncio.run(scenario())
    assert output == bytes(range(256)) * 1024
    assert write_calls < packets  # several packets per write


def test_first_choices_are_read_from_a_kexinit() -> None:
    from asyncssh.packet import Boolean, Byte, NameList, UInt32

    lists = [NameList([b"curve25519-sha256", b"mlkem768x25519-sha256"]), NameList([b"ssh-ed25519"])]
    lists += [NameList([b"x"])] * 8
    kexinit = b"".join([Byte(MSG_KEXINIT), bytes(16), *lists, Boolean(True), UInt32(0)])
    assert _first_choices(kexinit) == (b"curve25519-sha256", b"ssh-ed25519", True)
