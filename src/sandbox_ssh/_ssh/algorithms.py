"""Modern defaults only: curve25519/ECDH key exchange (asyncssh always offers strict-kex),
AEAD ciphers or CTR with encrypt-then-MAC, no SHA-1 signatures, no compression."""

KEX_ALGS = (
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
    "ecdh-sha2-nistp256",
    "ecdh-sha2-nistp384",
    "ecdh-sha2-nistp521",
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
