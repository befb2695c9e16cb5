"""sntrup761 through asyncssh's KEM interface, as the hybrid key exchange uses it."""

from __future__ import annotations

import asyncssh.kex
import pytest

from sandbox_ssh._ssh import algorithms  # importing it registers sntrup761
from sandbox_ssh._ssh.sntrup import Sntrup761


def test_both_sides_derive_the_same_secret() -> None:
    client, server = Sntrup761(b"sntrup761"), Sntrup761(b"sntrup761")
    secret, ciphertext = server.encaps(client.get_public())
    assert len(client.get_public()) == 1158 and len(ciphertext) == 1039
    assert client.decaps(ciphertext) == secret and len(secret) == 32


def test_wrong_sizes_are_refused_before_the_kem_sees_them() -> None:
    kem = Sntrup761(b"sntrup761")
    with pytest.raises(ValueError, match="public key"):
        kem.encaps(b"\0" * 1157)
    with pytest.raises(ValueError, match="ciphertext"):
        kem.decaps(b"\0" * 1040)


def test_offered_after_ml_kem_and_before_curve25519() -> None:
    kex = algorithms.KEX_ALGS
    assert kex.index("mlkem768x25519-sha256") < kex.index("sntrup761x25519-sha512")
    assert kex.index("sntrup761x25519-sha512@openssh.com") < kex.index("curve25519-sha256")
    assert b"sntrup761x25519-sha512@openssh.com" in asyncssh.kex.get_kex_algs()
