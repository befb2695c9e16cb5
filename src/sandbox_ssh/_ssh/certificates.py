"""User certificates for a session, signed with the CA that --trusted-user-ca-keys trusts."""

from __future__ import annotations

import time
from pathlib import Path

import asyncssh

# Valid from a little before now, so a client whose clock runs behind can use it at once.
_CLOCK_SKEW = 60.0


def sign_user_key(
    ca_key_path: Path, public_key_path: Path, session_id: str, ttl: float
) -> asyncssh.SSHCertificate:
    """A user certificate for ``session_id`` (its one principal), valid for ``ttl`` seconds."""
    try:
        ca_key = asyncssh.read_private_key(str(ca_key_path))
    except (OSError, asyncssh.KeyImportError) as error:
        raise ValueError(f"cannot read the CA key {ca_key_path}: {error}") from None
    try:
        user_key = asyncssh.read_public_key(str(public_key_path))
    except (OSError, asyncssh.KeyImportError) as error:
        raise ValueError(f"cannot read the public key {public_key_path}: {error}") from None
    now = time.time()
    return ca_key.generate_user_certificate(
        user_key,
        f"sandbox-ssh:{session_id}",
        principals=[session_id],
        valid_after=int(now - _CLOCK_SKEW),
        valid_before=int(now + ttl),
    )
