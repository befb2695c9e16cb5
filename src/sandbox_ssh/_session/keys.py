"""Where a session's authorized keys come from, in OpenSSH authorized_keys syntax."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..hooks import AuthorizedKeysSource, Sandbox

log = logging.getLogger("sandbox_ssh.auth")

_MAX_KEYS_TEXT = 1 << 20


KeysFetcher = Callable[[str], Awaitable[str]]


@dataclass(frozen=True)
class KeySources:
    """Each source adds keys; a key from any of them is accepted for the session."""

    admin_keys: Path | None = None  # valid for every session
    directory: Path | None = None  # DIR/<session-id>
    provider: AuthorizedKeysSource | None = None  # e.g. the container label
    fetchers: Sequence[KeysFetcher] = field(default_factory=tuple)  # e.g. the HTTP hook
    trusted_user_ca_keys: Path | None = None  # certificates naming the session as principal


def _read(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            return handle.read(_MAX_KEYS_TEXT).decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def ca_lines(text: str) -> str:
    """CA public keys as authorized_keys entries that accept certificates signed by them.

    asyncssh then requires the username (the session ID) among the principals, and
    honours the validity window and the critical options.
    """
    lines = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            lines.append(f"cert-authority {stripped}")
    return "\n".join(lines)


async def collect_authorized_keys(sandbox: Sandbox, sources: KeySources) -> str:
    """All authorized_keys lines for the sandbox's session; unreadable sources raise."""
    session_id = sandbox.session_id
    parts: list[str] = []
    loop = asyncio.get_running_loop()
    if sources.admin_keys is not None:
        parts.append(await loop.run_in_executor(None, _read, sources.admin_keys))
    if sources.trusted_user_ca_keys is not None:
        parts.append(
            ca_lines(await loop.run_in_executor(None, _read, sources.trusted_user_ca_keys))
        )
    if sources.directory is not None:
        # The session ID was validated, so it cannot name a path outside the directory.
        parts.append(await loop.run_in_executor(None, _read, sources.directory / session_id))
    if sources.provider is not None:
        parts.append(await sources.provider.get_authorized_keys(sandbox))
    for fetch in sources.fetchers:
        parts.append(await fetch(session_id))
    return "\n".join(part for part in parts if part)
