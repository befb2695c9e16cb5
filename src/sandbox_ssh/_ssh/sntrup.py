"""Streamlined NTRU Prime sntrup761, the KEM of OpenSSH 9's default key exchange.

asyncssh implements sntrup761x25519-sha512 but loads the KEM from liboqs,
which Debian and most hosts do not install. pqcrypto (Apache-2.0, Rust, abi3
wheels) provides the same KEM: the NTRU Prime round-3 parameter set that
OpenSSH uses, with its key, ciphertext and secret sizes. This adapts it to
asyncssh's KEM interface (internals.offer_sntrup761 registers it).
"""

from __future__ import annotations

from pqcrypto.kem import sntrup_761


class Sntrup761:
    """One side's KEM state for one key exchange, as asyncssh's PQKey protocol has it."""

    pubkey_bytes = 1158
    privkey_bytes = 1763
    ciphertext_bytes = 1039
    secret_bytes = 32

    def __init__(self, alg_name: bytes) -> None:
        if alg_name != b"sntrup761":
            raise ValueError(f"unknown KEM {alg_name!r}")
        self._public, self._private = sntrup_761.keygen()

    def get_public(self) -> bytes:
        return bytes(self._public)

    def encaps(self, peer_public: bytes) -> tuple[bytes, bytes]:
        """A fresh secret, and its ciphertext under the client's public key."""
        if len(peer_public) != self.pubkey_bytes:
            raise ValueError("Invalid public key")
        ciphertext, secret = sntrup_761.encaps(peer_public)
        return bytes(secret), bytes(ciphertext)

    def decaps(self, ciphertext: bytes) -> bytes:
        if len(ciphertext) != self.ciphertext_bytes:
            raise ValueError("Invalid ciphertext")
        return bytes(sntrup_761.decaps(self._private, ciphertext))
