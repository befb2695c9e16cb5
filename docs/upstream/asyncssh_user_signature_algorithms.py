"""Minimal reproduction: an asyncssh server accepts user signatures outside signature_algs.

The server is configured with signature_algs that exclude ssh-rsa (SHA-1) and ssh-dss,
and it advertises exactly that list in its server-sig-algs extension. A client that
signs its publickey request with ssh-rsa (SHA-1), or with a DSA key, still logs in:
SSHServerConnection.validate_public_key verifies the signature with the key itself,
which accepts every algorithm the key type supports. sshd refuses both by default
("signature algorithm ssh-rsa not in PubkeyAcceptedAlgorithms").

    python3 asyncssh_user_signature_algorithms.py    # needs asyncssh only; loopback
"""

import asyncio
import logging
import warnings

warnings.simplefilter("ignore")  # cryptography's DSA deprecation, raised at import

import asyncssh  # noqa: E402

ACCEPTED = ["ssh-ed25519", "rsa-sha2-512", "rsa-sha2-256"]


class Server(asyncssh.SSHServer):
    def __init__(self, key: asyncssh.SSHKey) -> None:
        self.key = key

    def begin_auth(self, username: str) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return key.public_data == self.key.public_data


async def try_login(kind: str, client_signs_with: str) -> str:
    user_key = asyncssh.generate_private_key(kind)
    server = await asyncssh.listen(
        "127.0.0.1",
        0,
        server_factory=lambda: Server(user_key),
        server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")],
        signature_algs=ACCEPTED,
    )
    port = server.sockets[0].getsockname()[1]
    try:
        async with asyncssh.connect(
            "127.0.0.1",
            port,
            username="u",
            known_hosts=None,
            client_keys=[user_key],
            signature_algs=[client_signs_with],
        ):
            return "logged in"
    except asyncssh.PermissionDenied:
        return "refused"
    finally:
        server.close()


class SignedWith(logging.Handler):
    """The algorithm the server saw in the request (asyncssh's own debug line)."""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "Verifying request with " in message:
            print(f"    server: {message.split('] ', 1)[-1]}")


async def main() -> None:
    logger = logging.getLogger("asyncssh")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(SignedWith())
    asyncssh.set_debug_level(1)
    print(f"server signature_algs={ACCEPTED}")
    tries = (("ssh-rsa", "rsa-sha2-256"), ("ssh-rsa", "ssh-rsa"), ("ssh-dss", "ssh-dss"))
    for kind, algorithm in tries:
        print(f"  {kind} key signing with {algorithm}:")
        print(f"    {await try_login(kind, algorithm)}")


asyncio.run(main())
