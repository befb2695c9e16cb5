"""chacha20-poly1305@openssh.com with fewer objects and copies per packet than asyncssh's.

The algorithm is OpenSSH's (PROTOCOL.chacha20poly1305): the packet length is
encrypted with the second half of the key, the payload with the first half
from block counter 1, and block 0 of that same keystream is the Poly1305 key.
asyncssh builds three ChaCha20 ciphers per packet and concatenates the whole
packet to authenticate it. Here one cipher gives both the Poly1305 key and the
payload's keystream (counter 0, then 1), and Poly1305 is fed the two parts
without joining them. The primitives are still `cryptography`'s (OpenSSL).

Measured on a download through the gateway, this and write coalescing (see
``internals``) cut the gateway's CPU per GB; the interoperability test checks it
against asyncssh's own implementation, packet for packet.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext
from cryptography.hazmat.primitives.ciphers.algorithms import ChaCha20
from cryptography.hazmat.primitives.poly1305 import Poly1305

_COUNTER_0 = bytes(8)
_BLOCK = bytes(64)


class FastChachaCipher:
    """Drop-in for ``asyncssh.crypto.ChachaCipher`` (same methods and results)."""

    def __init__(self, key: bytes) -> None:
        half = len(key) // 2
        self._key = key[:half]
        self._header_key = key[half:]

    def _header(self, header: bytes, nonce: bytes) -> bytes:
        cipher = Cipher(ChaCha20(self._header_key, _COUNTER_0 + nonce), mode=None)
        return cipher.encryptor().update(header)

    def _payload_stream(self, nonce: bytes) -> tuple[CipherContext, bytes]:
        """The payload's keystream positioned at block 1, and the Poly1305 key (block 0)."""
        stream = Cipher(ChaCha20(self._key, _COUNTER_0 + nonce), mode=None).encryptor()
        return stream, stream.update(_BLOCK)[:32]

    def encrypt_and_sign(self, header: bytes, data: bytes, nonce: bytes) -> tuple[bytes, bytes]:
        header = self._header(header, nonce)
        stream, poly_key = self._payload_stream(nonce)
        data = stream.update(data)
        mac = Poly1305(poly_key)
        mac.update(header)
        mac.update(data)
        return header + data, mac.finalize()

    def decrypt_header(self, header: bytes, nonce: bytes) -> bytes:
        return self._header(header, nonce)

    def verify_and_decrypt(
        self, header: bytes, data: bytes, nonce: bytes, tag: bytes
    ) -> bytes | None:
        stream, poly_key = self._payload_stream(nonce)
        mac = Poly1305(poly_key)
        mac.update(header)
        mac.update(data)
        try:
            mac.verify(tag)
        except InvalidSignature:
            return None
        return stream.update(data)
