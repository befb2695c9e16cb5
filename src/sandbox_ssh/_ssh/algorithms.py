"""Defaults an auditor accepts: post-quantum hybrid key exchange first, then curve25519 (no
NIST ECDH); AEAD ciphers, or CTR with a SHA-2 MAC; no SHA-1 signatures; no compression.

asyncssh always offers strict-kex (the Terrapin fix). Every algorithm asyncssh implements
stays available through the --kex-algorithms, --ciphers and --macs options.
"""

from asyncssh.kex import get_kex_algs

from .internals import offer_sntrup761

offer_sntrup761()
_SUPPORTED_KEX = {name.decode() for name in get_kex_algs()}

KEX_ALGS = tuple(
    name
    for name in (
        # ML-KEM-768 with X25519 (OpenSSH 10's default), then Streamlined NTRU Prime with
        # X25519 (OpenSSH 9's; from pqcrypto unless asyncssh has liboqs), then X25519 alone.
        "mlkem768x25519-sha256",
        "sntrup761x25519-sha512",
        "sntrup761x25519-sha512@openssh.com",
        "curve25519-sha256",
        "curve25519-sha256@libssh.org",
    )
    if name in _SUPPORTED_KEX
)
ENCRYPTION_ALGS = (
    "chacha20-poly1305@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-gcm@openssh.com",
    "aes256-ctr",
    "aes192-ctr",
    "aes128-ctr",
)
MAC_ALGS = (
    "hmac-sha2-256-etm@openssh.com",
    "hmac-sha2-512-etm@openssh.com",
    "umac-128-etm@openssh.com",
    # As OpenSSH's sshd offers them: libssh2 1.10 (Debian 12's, so curl's) has neither ETM
    # MACs nor AEAD ciphers, and cannot connect without them.
    "hmac-sha2-256",
    "hmac-sha2-512",
)
SIGNATURE_ALGS = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "rsa-sha2-512",
    "rsa-sha2-256",
)
COMPRESSION_ALGS = ("none",)


def check_algorithms(kind: str, names: tuple[str, ...]) -> None:
    """Refuse names asyncssh does not implement, with a clear start-up error."""
    from asyncssh.compression import get_compression_algs
    from asyncssh.encryption import get_encryption_algs
    from asyncssh.kex import get_kex_algs
    from asyncssh.mac import get_mac_algs
    from asyncssh.public_key import get_public_key_algs

    known = {
        "kex": get_kex_algs,
        "cipher": get_encryption_algs,
        "mac": get_mac_algs,
        "host key": get_public_key_algs,
        "compression": get_compression_algs,
    }[kind]()
    supported = {name.decode() for name in known}
    unknown = [name for name in names if name not in supported]
    if not names:
        raise ValueError(f"the {kind} algorithm list is empty")
    if unknown:
        raise ValueError(f"unsupported {kind} algorithm(s): {', '.join(unknown)}")
