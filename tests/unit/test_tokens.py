"""Short-lived tokens (see _session/tokens.py): minting, checking, caching."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sandbox_ssh._session.tokens import (
    CachedTokenVerifier,
    HmacTokenVerifier,
    load_token_key,
    mint_token,
    split_username,
)
from sandbox_ssh.hooks import TokenRefused, TokenVerdict

KEY = b"k" * 32
NOW = 1_800_000_000.0


def _verifier(now: float = NOW) -> HmacTokenVerifier:
    return HmacTokenVerifier(KEY, clock=lambda: now)


def test_a_token_lets_in_its_own_session_until_it_expires() -> None:
    token = mint_token(KEY, "s1", 7200, now=NOW)
    assert _verifier().check("s1", token).expires_at == NOW + 7200
    with pytest.raises(TokenRefused, match='the token for session "s1" has expired'):
        _verifier(NOW + 7200).check("s1", token)


def test_a_token_for_one_session_is_refused_for_another() -> None:
    token = mint_token(KEY, "s1", 60, now=NOW)
    with pytest.raises(TokenRefused, match='not valid for session "s2"'):
        _verifier().check("s2", token)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: str(int(t.split(".")[0]) + 3600) + "." + t.split(".")[1],  # a later expiry
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # a changed MAC
        lambda t: t + "x",
        lambda t: "",
        lambda t: "x" * 10_000,
        lambda t: t.replace(".", "#"),
    ],
)
def test_a_tampered_token_is_refused_and_the_reason_does_not_carry_it(tamper: object) -> None:
    token = mint_token(KEY, "s1", 60, now=NOW)
    bad = tamper(token)  # type: ignore[operator]
    with pytest.raises(TokenRefused) as refusal:
        _verifier().check("s1", bad)
    assert bad not in str(refusal.value) or not bad
    assert token.split(".")[1] not in str(refusal.value)


def test_a_token_from_another_key_is_refused() -> None:
    token = mint_token(b"o" * 32, "s1", 60, now=NOW)
    with pytest.raises(TokenRefused):
        _verifier().check("s1", token)


def test_the_username_may_carry_the_token() -> None:
    assert split_username("s1#1.abc") == ("s1", "1.abc")
    assert split_username("s1") == ("s1", None)
    assert split_username("s1#") == ("s1", "")


def test_a_short_or_missing_key_file_is_refused_with_one_line(tmp_path: Path) -> None:
    short = tmp_path / "short"
    short.write_text("too short\n")
    with pytest.raises(ValueError, match="shorter than 32 bytes"):
        load_token_key(short)
    with pytest.raises(ValueError, match="cannot read the token key"):
        load_token_key(tmp_path / "missing")
    good = tmp_path / "good"
    good.write_bytes(KEY + b"\nignored\n")
    assert load_token_key(good) == KEY


class CountingVerifier:
    def __init__(self, verdict: TokenVerdict) -> None:
        self.verdict = verdict
        self.calls = 0

    async def verify_token(self, session_id: str, token: str) -> TokenVerdict:
        self.calls += 1
        return self.verdict


def test_a_reusable_token_is_remembered_for_a_while_and_a_single_use_one_never() -> None:
    now = [NOW]
    reusable = CountingVerifier(TokenVerdict(expires_at=NOW + 3600))
    cached = CachedTokenVerifier(reusable, seconds=60, clock=lambda: now[0])
    asyncio.run(cached.verify_token("s1", "t"))
    asyncio.run(cached.verify_token("s1", "t"))
    assert reusable.calls == 1
    now[0] += 61
    asyncio.run(cached.verify_token("s1", "t"))
    assert reusable.calls == 2
    asyncio.run(cached.verify_token("s2", "t"))  # another session: asked again
    assert reusable.calls == 3

    single = CountingVerifier(TokenVerdict(single_use=True))
    cached = CachedTokenVerifier(single, clock=lambda: now[0])
    asyncio.run(cached.verify_token("s1", "t"))
    asyncio.run(cached.verify_token("s1", "t"))
    assert single.calls == 2


def test_a_cached_token_is_not_taken_beyond_its_expiry() -> None:
    now = [NOW]
    inner = CountingVerifier(TokenVerdict(expires_at=NOW + 10))
    cached = CachedTokenVerifier(inner, seconds=60, clock=lambda: now[0])
    asyncio.run(cached.verify_token("s1", "t"))
    now[0] += 11
    with pytest.raises(TokenRefused, match="has expired"):
        asyncio.run(cached.verify_token("s1", "t"))
