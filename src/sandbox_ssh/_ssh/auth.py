"""Public-key authentication on asyncssh, with sshd's limits.

asyncssh matches keys and certificates and enforces the authorized_keys
options (from=, command=, environment=, no-pty, no-port-forwarding), and it
binds identity only to a key whose signature verified. What it lacks is
sshd's MaxAuthTries, added here.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncssh
from asyncssh.public_key import decode_ssh_certificate, decode_ssh_public_key

from .internals import (
    certificate_signature_algorithm,
    key_signature_algorithms,
    signature_algorithm,
    wrap_validate_public_key,
)

log = logging.getLogger("sandbox_ssh.auth")

MAX_AUTH_ATTEMPTS = 6


def parse_authorized_keys(text: str, session_id: str) -> asyncssh.SSHAuthorizedKeys | None:
    """The valid lines of ``text``; bad lines are skipped with a warning, as sshd does."""
    good: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            asyncssh.import_authorized_keys(stripped)
        except (ValueError, asyncssh.KeyImportError) as error:
            log.warning(
                "session %s: skipping authorized key line %d: %s", session_id, number, error
            )
            continue
        good.append(stripped)
    return asyncssh.import_authorized_keys("\n".join(good)) if good else None


def signature_refusal(accepted: frozenset[str], key_data: bytes, signature: bytes) -> str | None:
    """Why a user key or its signature is refused by its algorithm, as sshd's
    PubkeyAcceptedAlgorithms refuses it; None when it may be used.

    Without a signature (a query), a key that can sign with no accepted algorithm
    (DSA, by default) is refused at once. A signature must use an accepted algorithm,
    and so must the CA's signature on a certificate (sshd's CASignatureAlgorithms).
    """
    usable = key_signature_algorithms(key_data)
    if usable and not accepted.intersection(usable):
        return f"no accepted signature algorithm for a {usable[-1]} key"
    if signature:
        try:
            used = signature_algorithm(signature)
        except Exception:
            return None  # malformed: asyncssh's own verification refuses it
        if used not in accepted:
            return f"signature algorithm {used} is not accepted"
    ca_algorithm = certificate_signature_algorithm(key_data)
    if ca_algorithm is not None and ca_algorithm not in accepted:
        return f"the certificate's CA signature algorithm {ca_algorithm} is not accepted"
    return None


def accept_only_signature_algorithms(
    conn: asyncssh.SSHServerConnection,
    accepted: frozenset[str],
    on_refused: Callable[[str], None],
) -> None:
    """Refuse user keys and signatures whose algorithm is not in ``accepted``, telling
    ``on_refused`` why (asyncssh advertises the list in server-sig-algs but verifies a
    signature made with any algorithm the key supports)."""

    def checking(
        original: Callable[..., Awaitable[bool]],
    ) -> Callable[..., Awaitable[bool]]:
        async def checked(username: str, key_data: bytes, msg: bytes, signature: bytes) -> bool:
            refusal = signature_refusal(accepted, key_data, signature if msg else b"")
            if refusal is not None:
                on_refused(refusal)
                return False
            return await original(username, key_data, msg, signature)

        return checked

    wrap_validate_public_key(conn, checking)


def limit_auth_attempts(
    conn: asyncssh.SSHServerConnection,
    on_failure: Callable[[str], None],
    on_success: Callable[[str], Awaitable[None]],
) -> None:
    """Disconnect after MAX_AUTH_ATTEMPTS rejected keys, as sshd's MaxAuthTries does.

    asyncssh has no such limit; every publickey attempt, query or signed, goes
    through the connection's validate_public_key, which is wrapped here.
    """
    failures = 0

    def counting(
        original: Callable[..., Awaitable[bool]],
    ) -> Callable[..., Awaitable[bool]]:
        async def counted(username: str, key_data: bytes, msg: bytes, signature: bytes) -> bool:
            nonlocal failures
            accepted = await original(username, key_data, msg, signature)
            if accepted:
                if msg:  # only a verified signature binds the identity
                    await on_success(_fingerprint(key_data))
                return True
            failures += 1
            on_failure(_fingerprint(key_data))
            if failures >= MAX_AUTH_ATTEMPTS:
                raise asyncssh.DisconnectError(
                    asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE,
                    "Too many authentication failures",
                )
            return False

        return counted

    wrap_validate_public_key(conn, counting)


def _fingerprint(key_data: bytes) -> str:
    """SHA256 fingerprint of a key or certificate as sent on the wire (for logs; never raises)."""
    try:
        return str(decode_ssh_public_key(key_data).get_fingerprint("sha256"))
    except Exception:
        pass
    try:
        certificate: Any = decode_ssh_certificate(key_data)
        fingerprint = certificate.key.get_fingerprint("sha256")
        return f"{fingerprint} (certificate {certificate.key_id!r})"
    except Exception:
        return "unparsable key"
