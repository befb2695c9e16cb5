"""Short-lived access tokens: minted with a shared key, checked without any state.

A token is ``<expiry>.<mac>``: the expiry in Unix seconds, and HMAC-SHA256 over
the session ID and that expiry with the shared key, base64url without padding.
It names no session, so a token for one session is simply not valid for another.
Tokens carry no secret of their own beyond the MAC and are compared in constant
time. A token is never logged, counted or shown; the messages here name the
session only.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import re
import time
from collections.abc import Callable
from pathlib import Path

from ..hooks import TokenRefused, TokenVerdict, TokenVerifier

# The key file's first line; shorter keys are refused (HMAC-SHA256 wants 32 bytes).
MIN_KEY_BYTES = 32
# A token longer than this is refused before anything else is done with it.
MAX_TOKEN_LENGTH = 4096
_TOKEN = re.compile(r"(\d{1,12})\.([A-Za-z0-9_-]{43})")


def load_token_key(path: Path) -> bytes:
    """The shared key: the file's first line, at least MIN_KEY_BYTES long."""
    try:
        lines = path.read_bytes().splitlines()
    except OSError as error:
        raise ValueError(f"cannot read the token key {path}: {error.strerror}") from None
    key = lines[0].strip() if lines else b""
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(
            f"the token key {path} is shorter than {MIN_KEY_BYTES} bytes; "
            "make one with: head -c 32 /dev/urandom | base64 > FILE"
        )
    return key


def _mac(key: bytes, session_id: str, expiry: int) -> str:
    message = b"sandbox-ssh token v1\0" + session_id.encode() + b"\0" + str(expiry).encode()
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def mint_token(key: bytes, session_id: str, ttl: float, *, now: float | None = None) -> str:
    """A token for ``session_id`` valid for ``ttl`` seconds from now."""
    if ttl <= 0:
        raise ValueError("a token's lifetime must be positive")
    expiry = int((time.time() if now is None else now) + ttl)
    return f"{expiry}.{_mac(key, session_id, expiry)}"


class HmacTokenVerifier:
    """Checks tokens minted by :func:`mint_token` with the same key."""

    def __init__(self, key: bytes, *, clock: Callable[[], float] = time.time) -> None:
        self._key = key
        self._clock = clock

    async def verify_token(self, session_id: str, token: str) -> TokenVerdict:
        return self.check(session_id, token)

    def check(self, session_id: str, token: str) -> TokenVerdict:
        match = _TOKEN.fullmatch(token) if len(token) <= MAX_TOKEN_LENGTH else None
        if match is None:
            raise TokenRefused(f'the token is not valid for session "{session_id}"')
        expiry = int(match.group(1))
        if not hmac.compare_digest(_mac(self._key, session_id, expiry), match.group(2)):
            raise TokenRefused(f'the token is not valid for session "{session_id}"')
        if expiry <= self._clock():
            raise TokenRefused(f'the token for session "{session_id}" has expired')
        return TokenVerdict(expires_at=float(expiry))


def split_username(username: str) -> tuple[str, str | None]:
    """``SESSION#TOKEN`` into the session ID and the token; a plain username has no token."""
    session_id, hash_sign, token = username.partition("#")
    return (session_id, token) if hash_sign else (username, None)


# How long an accepted, reusable token is taken without asking the verifier again; an IDE
# opens several connections at once, and a platform's revocation is honoured within this.
TOKEN_CACHE_SECONDS = 60.0
_TOKEN_CACHE_ENTRIES = 10_000


class CachedTokenVerifier:
    """Remembers accepted tokens for a short while; single-use ones never.

    Entries are keyed by a hash of session ID and token, so the cache holds no token.
    """

    def __init__(
        self,
        verifier: TokenVerifier,
        *,
        seconds: float = TOKEN_CACHE_SECONDS,
        entries: int = _TOKEN_CACHE_ENTRIES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._verifier = verifier
        self._seconds = seconds
        self._entries = entries
        self._clock = clock
        self._accepted: collections.OrderedDict[bytes, tuple[float, TokenVerdict]] = (
            collections.OrderedDict()
        )

    async def verify_token(self, session_id: str, token: str) -> TokenVerdict:
        key = hashlib.sha256(session_id.encode() + b"\0" + token.encode()).digest()
        now = self._clock()
        cached = self._accepted.get(key)
        if cached is not None:
            if cached[0] > now:
                return cached[1]
            del self._accepted[key]
        verdict = await self._verifier.verify_token(session_id, token)
        if verdict.expires_at is not None and verdict.expires_at <= now:
            raise TokenRefused(f'the token for session "{session_id}" has expired')
        if not verdict.single_use:
            until = now + self._seconds
            if verdict.expires_at is not None:
                until = min(until, verdict.expires_at)
            self._accepted[key] = (until, verdict)
            while len(self._accepted) > self._entries:
                self._accepted.popitem(last=False)
        return verdict
