"""Clients for forwarded ports: plain TCP, a SOCKS5 client, and the stand-in's protocol."""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import random
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

from .containers import Container, docker

STANDIN_SOURCE = Path(__file__).with_name("standin.py")
STANDIN_PATH = "/usr/local/lib/sandbox-ssh-standin.py"


def install_standin(container: Container) -> None:
    """Put the stand-in server into the sandbox through exec's stdin (not the archive API)."""
    docker(
        "exec",
        "-i",
        "-u",
        "0",
        container.id,
        "sh",
        "-c",
        f"cat > {STANDIN_PATH}",
        input=STANDIN_SOURCE.read_bytes(),
    )


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def one_shot_server(reply: bytes) -> Iterator[int]:
    """A loopback service that sends ``reply`` to its first connection; yields its port."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        def answer() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.sendall(reply)

        threading.Thread(target=answer, daemon=True).start()
        yield int(listener.getsockname()[1])


def connect_when_listening(port: int, timeout: float = 15.0) -> socket.socket:
    """Connect to a loopback port once something listens there (a forward coming up)."""
    from .wait import wait_until

    def attempt() -> socket.socket | None:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=10)
        except ConnectionRefusedError:
            return None

    return wait_until(attempt, timeout=timeout, message=f"nothing listened on port {port}")


def socks5_connect(proxy_port: int, host: str, port: int, timeout: float = 20) -> socket.socket:
    """CONNECT through a SOCKS5 proxy on loopback (ssh -D), by address or by name."""
    sock = socket.create_connection(("127.0.0.1", proxy_port), timeout=timeout)
    sock.sendall(b"\x05\x01\x00")
    if recv_exact(sock, 2) != b"\x05\x00":
        raise ConnectionError("SOCKS5 proxy refused the no-auth method")
    try:
        address = ipaddress.ip_address(host)
        target = (b"\x01" if address.version == 4 else b"\x04") + address.packed
    except ValueError:
        target = b"\x03" + bytes([len(host)]) + host.encode()
    sock.sendall(b"\x05\x01\x00" + target + struct.pack(">H", port))
    reply = recv_exact(sock, 4)
    if reply[1] != 0:
        sock.close()
        raise ConnectionError(f"SOCKS5 CONNECT failed with code {reply[1]}")
    skip = {1: 4, 4: 16}.get(reply[3])
    recv_exact(sock, (skip if skip is not None else recv_exact(sock, 1)[0]) + 2)
    return sock


def recv_exact(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        part = sock.recv(size - len(data))
        if not part:
            raise ConnectionError(f"connection closed after {len(data)} of {size} bytes")
        data += part
    return bytes(data)


def recv_line(sock: socket.socket) -> bytes:
    line = bytearray()
    while not line.endswith(b"\n"):
        part = sock.recv(1)
        if not part:
            break
        line += part
    return bytes(line)


def recv_all(sock: socket.socket) -> bytes:
    chunks = []
    while part := sock.recv(1 << 20):
        chunks.append(part)
    return b"".join(chunks)


def expected_download_digest(size: int, seed: int) -> str:
    generator, digest, remaining = random.Random(seed), hashlib.sha256(), size
    while remaining > 0:
        chunk = min(remaining, 1 << 20)
        digest.update(generator.randbytes(chunk))
        remaining -= chunk
    return digest.hexdigest()


def download_digest(sock: socket.socket, size: int, seed: int) -> str:
    """Ask the stand-in for ``size`` seeded bytes and hash what arrives."""
    sock.sendall(f"download {size} {seed}\n".encode())
    digest, received = hashlib.sha256(), 0
    while part := sock.recv(1 << 20):
        digest.update(part)
        received += len(part)
    assert received == size, f"received {received} of {size} bytes"
    return digest.hexdigest()
