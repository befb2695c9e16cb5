"""Every use of asyncssh's internals, in one place (asyncssh 2.14 to 2.24).

Each function names the private attribute it relies on and why the public API
does not do. tests/unit/test_internals.py pins each one against the installed
asyncssh, so an upgrade that changes one fails there, not in production.

* ``SSHConnection.send_packet``: asyncssh puts an empty SSH_MSG_IGNORE before
  every packet once encryption is on, a defence against the predictable-IV
  attack on CBC ciphers. With CTR and AEAD ciphers it protects nothing, yet it
  doubles the packets the gateway encrypts and writes (two per keystroke
  echo). sshd sends none.
* ``SSHConnection._send``: asyncssh writes each packet to the transport as it
  is made, one system call per 32 KiB packet of bulk data. Packets made in one
  turn of the event loop are written together here (``writelines``, one
  ``writev``), before anything else the loop runs, so the order and the
  latency of single packets are unchanged. Until encryption starts
  (``_send_encryption``) each write goes out at once.
* ``asyncssh.encryption.ChachaCipher``: replaced by ``chacha.FastChachaCipher``
  (fewer cipher objects and copies per packet; same bytes on the wire).
* ``SSHServerConnection.validate_public_key``: every publickey attempt passes
  through it, so sshd's MaxAuthTries is counted there, and the signature
  algorithms are checked there: asyncssh offers only the configured ones in
  ``server-sig-algs`` but verifies a user's signature made with any algorithm
  the key supports (``ssh-rsa`` with SHA-1, ``ssh-dss``), where sshd refuses
  one not in PubkeyAcceptedAlgorithms. The signature's algorithm is the first
  string of its blob, and a certificate's CA signature is its last field
  (``signature_algorithm``, ``certificate_signature_algorithm``). Reproduction:
  docs/upstream/asyncssh-user-signature-algorithms.md.
* ``SSHChannel._report_response``: answers a request whose reply was deferred
  (``subsystem_requested`` returning None), asyncssh's own mechanism.
* ``SSHConnection._make_keepalive_request``: one round trip to the client.
* ``SSHServerConnection.create_agent_listener`` and ``create_agent_channel``: asyncssh
  answers `auth-agent-req@openssh.com` by listening on the gateway host; the gateway
  replaces the listener with one inside the sandbox and opens the agent channels itself.
* ``SSHConnection._packet_handlers[MSG_KEXINIT]`` and ``_ignore_first_kex``: asyncssh
  decides whether a client's guessed key-exchange packet must be ignored by comparing
  the *negotiated* algorithm with the client's first, not, as RFC 4253 7.1 says, the
  two sides' first choices. With mlkem768x25519-sha256 first on the server, Dropbear
  (which guesses curve25519) follows the RFC and sends its packet again, and asyncssh
  drops the connection ("Key exchange not in progress"). Reproduction:
  docs/upstream/asyncssh-kex-guess.md.
* ``SSHConnection._recv_handler`` (``_recv_version`` until the client's version line is
  accepted) and ``_inpbuf``: asyncssh closes on an identification string it refuses
  without a word; sshd writes why first (identification.py).
* ``SSHConnection._global_request_queue`` and ``_report_global_response``: asyncssh answers
  global requests one at a time, and a channel opened after a ``tcpip-forward`` may be
  handled before that forward is bound; sshd handles both in order. The queue holds the
  requests not yet answered.
* ``asyncssh.kex.register_kex_alg`` and ``asyncssh.kex_dh._KexHybridECDH``: asyncssh has
  sntrup761x25519-sha512 only with liboqs; it is registered with pqcrypto's KEM instead
  (sntrup.py), through asyncssh's own hybrid key exchange.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import asyncssh
import asyncssh.connection
import asyncssh.encryption
from asyncssh.constants import MSG_IGNORE, MSG_KEXINIT
from asyncssh.packet import SSHPacket, String
from asyncssh.public_key import (
    SSHOpenSSHCertificate,
    decode_ssh_certificate,
    decode_ssh_public_key,
)

from . import identification
from .chacha import FastChachaCipher

_EMPTY_STRING = b"\x00\x00\x00\x00"


def is_cbc(cipher: str) -> bool:
    return cipher.endswith("-cbc") or "-cbc@" in cipher


def skip_cbc_ignore_padding(conn: asyncssh.SSHServerConnection) -> None:
    """Drop the empty IGNORE that asyncssh puts before each packet, unless the
    negotiated cipher is CBC.

    Nothing else in asyncssh sends an empty IGNORE, and receivers must discard
    IGNORE (RFC 4253 11.2), so dropping it changes nothing a client can rely on.
    Only IGNORE packets pay for the cipher check.
    """
    send_packet: Callable[..., None] = conn.send_packet

    def without_ignore_padding(pkttype: int, *args: bytes, **kwargs: Any) -> None:
        if (
            pkttype == MSG_IGNORE
            and args == (_EMPTY_STRING,)
            and not kwargs
            and not is_cbc(str(conn.get_extra_info("send_cipher", "")))
        ):
            return
        send_packet(pkttype, *args, **kwargs)

    conn.send_packet = without_ignore_padding  # type: ignore[method-assign]


def coalesce_writes(conn: asyncssh.SSHServerConnection) -> None:
    """Write the packets of one event-loop turn with one ``writelines``.

    The flush is scheduled with ``call_soon`` at the first packet, so it runs
    before any callback scheduled after it, including the transport abort that
    asyncssh schedules when it closes a connection after a last packet.
    """
    loop = asyncio.get_running_loop()
    pending: list[bytes] = []
    # uvloop's transports are not asyncio.WriteTransport subclasses; any has writelines.
    target: list[Any] = [None]

    def flush() -> None:
        transport = target[0]
        batch = pending[:]
        pending.clear()
        if transport is not None and not transport.is_closing():
            with contextlib.suppress(ConnectionError):
                transport.writelines(batch)

    def send(data: bytes) -> None:
        transport = conn._transport
        if transport is None:
            return
        if conn._send_encryption is None:
            # The version line and key exchange, written at once as sshd does: a client that
            # half-closes at once (a probe, `printf '' | ssh ...`) still reads the version.
            transport.write(data)
            return
        if not pending:
            target[0] = transport
            loop.call_soon(flush)
        pending.append(data)

    conn._send = send  # type: ignore[method-assign]


def use_fast_chacha() -> None:
    """Make every new chacha20-poly1305 key use FastChachaCipher (idempotent)."""
    asyncssh.encryption.ChachaCipher = FastChachaCipher  # type: ignore[attr-defined, assignment]


def wrap_validate_public_key(
    conn: asyncssh.SSHServerConnection,
    wrapper: Callable[[Callable[..., Awaitable[bool]]], Callable[..., Awaitable[bool]]],
) -> None:
    """Route every publickey attempt (query or signed) of ``conn`` through ``wrapper``."""
    original: Callable[..., Awaitable[bool]] = conn.validate_public_key
    conn.validate_public_key = wrapper(original)  # type: ignore[method-assign, assignment]


def signature_algorithm(signature: bytes) -> str:
    """The algorithm an SSH signature blob names (RFC 4253 6.6: string name, string blob)."""
    return SSHPacket(signature).get_string().decode(errors="replace")


def certificate_signature_algorithm(key_data: bytes) -> str | None:
    """The algorithm of the CA's signature on an OpenSSH certificate; None for a plain key.

    The certificate's last two fields are the CA's public key and its signature, so the
    signature is what follows the last copy of the CA key's wire form.
    """
    try:
        certificate = decode_ssh_certificate(key_data)
    except asyncssh.KeyImportError:
        return None
    if not isinstance(certificate, SSHOpenSSHCertificate):
        return None  # an X.509 chain
    signing_key = String(certificate.signing_key.public_data)
    _, found, signature_field = key_data.rpartition(signing_key)
    if not found:
        return None
    return signature_algorithm(SSHPacket(signature_field).get_string())


def key_signature_algorithms(key_data: bytes) -> tuple[str, ...]:
    """Every signature algorithm the key (or the certificate's key) can sign with."""
    try:
        key: Any = decode_ssh_certificate(key_data)
    except asyncssh.KeyImportError:
        try:
            key = decode_ssh_public_key(key_data)
        except asyncssh.KeyImportError:
            return ()
    return tuple(name.decode(errors="replace") for name in key.sig_algorithms)


def answer_deferred_request(chan: asyncssh.SSHServerChannel[bytes], accepted: bool) -> None:
    """Reply to a channel request whose callback returned None (a deferred reply)."""
    chan._report_response(accepted)


async def round_trip(conn: asyncssh.connection.SSHConnection) -> None:
    """Wait for the client to answer one keepalive request."""
    await conn._make_keepalive_request()


def _first_choices(kexinit: bytes) -> tuple[bytes, bytes, bool]:
    """(first kex algorithm, first host key algorithm, first_kex_packet_follows) of a KEXINIT."""
    packet = SSHPacket(kexinit)
    if packet.get_byte() != MSG_KEXINIT:
        raise ValueError("not a KEXINIT")
    packet.get_bytes(16)
    kex_algs, host_key_algs = packet.get_namelist(), packet.get_namelist()
    for _ in range(8):
        packet.get_namelist()
    follows = packet.get_boolean()
    return kex_algs[0] if kex_algs else b"", host_key_algs[0] if host_key_algs else b"", follows


def follow_rfc_kex_guess(conn: asyncssh.SSHServerConnection) -> None:
    """Ignore a client's guessed key-exchange packet exactly when RFC 4253 says so.

    The guess is wrong when the two sides' first key exchange (or host key)
    algorithms differ, whatever is negotiated.
    """
    handlers: dict[int, Any] = dict(conn._packet_handlers)
    process_kexinit = handlers[MSG_KEXINIT]

    async def process(self: Any, pkttype: int, pktid: int, packet: SSHPacket) -> None:
        # A coroutine in asyncssh, which awaits it before it reads the next packet (the
        # guessed one); so the decision below is in place when that packet is handled.
        await process_kexinit(self, pkttype, pktid, packet)
        client = getattr(self, "_client_kexinit", b"")
        server = getattr(self, "_server_kexinit", b"")
        if client and server and getattr(self, "_kex", None) is not None:
            client_kex, client_host_key, follows = _first_choices(client)
            server_kex, server_host_key, _ = _first_choices(server)
            self._ignore_first_kex = follows and (
                client_kex != server_kex or client_host_key != server_host_key
            )

    handlers[MSG_KEXINIT] = process
    conn._packet_handlers = handlers


def explain_refused_identification(conn: asyncssh.SSHServerConnection) -> None:
    """Before asyncssh refuses the client's identification string, write sshd's reason."""
    receive_version: Callable[[], bool] = conn._recv_version

    def receive() -> bool:
        reason = identification.refusal(bytes(conn._inpbuf))
        transport = conn._transport
        if reason is not None and transport is not None:
            transport.write(reason.encode() + b"\r\n")
        return receive_version()

    conn._recv_handler = receive


def offer_sntrup761() -> None:
    """Register sntrup761x25519-sha512 (and its @openssh.com name) with pqcrypto's KEM, when
    asyncssh found no liboqs and pqcrypto is installed. Idempotent."""
    import hashlib

    import asyncssh.crypto
    import asyncssh.kex
    import asyncssh.kex_dh

    names = (b"sntrup761x25519-sha512", b"sntrup761x25519-sha512@openssh.com")
    if asyncssh.crypto.sntrup_available or names[0] in asyncssh.kex.get_kex_algs():
        return
    try:
        from .sntrup import Sntrup761
    except ImportError:
        return
    for name in names:
        asyncssh.kex.register_kex_alg(
            name,
            asyncssh.kex_dh._KexHybridECDH,
            hashlib.sha512,
            (Sntrup761, b"sntrup761", asyncssh.crypto.Curve25519DH),
            True,
        )


def answered_in_order(conn: asyncssh.SSHServerConnection) -> Callable[[], Awaitable[None]]:
    """Returns ``earlier()``: called when a channel open is handled, an awaitable that
    completes once every global request received before it has been answered."""
    answered = asyncio.Event()
    report = conn._report_global_response

    def report_and_wake(result: bool | bytes) -> None:
        report(result)
        answered.set()

    conn._report_global_response = report_and_wake  # type: ignore[method-assign]

    def earlier() -> Awaitable[None]:
        pending = list(conn._global_request_queue)

        async def wait() -> None:
            while any(
                request is queued for request in pending for queued in conn._global_request_queue
            ):
                answered.clear()
                await answered.wait()

        return wait()

    return earlier


def replace_agent_listener(
    conn: asyncssh.SSHServerConnection, create: Callable[[], Awaitable[bool]]
) -> None:
    """Have ``create`` answer the connection's agent forwarding requests (True: granted)."""
    conn.create_agent_listener = create  # type: ignore[method-assign, assignment]


async def open_agent_channel(
    conn: asyncssh.SSHServerConnection, session_factory: Callable[[], Any]
) -> None:
    """Open an `auth-agent@openssh.com` channel to the client, served by a new session."""
    channel = conn.create_agent_channel()
    await channel.open(session_factory)
