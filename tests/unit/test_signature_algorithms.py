"""User signature algorithms: only the configured ones, as sshd's PubkeyAcceptedAlgorithms.

asyncssh advertises the configured list in server-sig-algs, yet verifies a user's
signature made with any algorithm the key supports (docs/upstream/
asyncssh-user-signature-algorithms.md); the gateway checks it first.
"""

from __future__ import annotations

import warnings

import asyncssh
import pytest

from sandbox_ssh._ssh.algorithms import SIGNATURE_ALGS
from sandbox_ssh._ssh.auth import signature_refusal
from sandbox_ssh._ssh.internals import (
    certificate_signature_algorithm,
    key_signature_algorithms,
    signature_algorithm,
)

DEFAULTS = frozenset(SIGNATURE_ALGS)
DATA = b"what a client signs"


def key(kind: str) -> asyncssh.SSHKey:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cryptography deprecates DSA
        return asyncssh.generate_private_key(kind)


@pytest.fixture(scope="module")
def rsa() -> asyncssh.SSHKey:
    return key("ssh-rsa")


@pytest.fixture(scope="module")
def dsa() -> asyncssh.SSHKey:
    return key("ssh-dss")


def test_the_signature_blob_names_its_algorithm(rsa: asyncssh.SSHKey) -> None:
    for name in (b"ssh-rsa", b"rsa-sha2-256", b"rsa-sha2-512"):
        assert signature_algorithm(rsa.sign(DATA, name)) == name.decode()


def test_a_certificates_ca_signature_algorithm_is_its_last_field(rsa: asyncssh.SSHKey) -> None:
    user = key("ssh-ed25519")
    for name in ("ssh-rsa", "rsa-sha2-256", "rsa-sha2-512"):
        certificate = rsa.generate_user_certificate(user, "id", principals=["s"], sig_alg=name)
        assert certificate_signature_algorithm(certificate.public_data) == name
    assert certificate_signature_algorithm(user.public_data) is None
    assert key_signature_algorithms(user.public_data) == ("ssh-ed25519",)


def test_regression_ssh_rsa_sha1_user_signature_was_accepted_by_default(
    rsa: asyncssh.SSHKey,
) -> None:
    sha1 = rsa.sign(DATA, b"ssh-rsa")
    assert signature_refusal(DEFAULTS, rsa.public_data, sha1) == (
        "signature algorithm ssh-rsa is not accepted"
    )
    assert signature_refusal(DEFAULTS, rsa.public_data, b"") is None  # a query: SHA-2 may follow
    for name in (b"rsa-sha2-256", b"rsa-sha2-512"):
        assert signature_refusal(DEFAULTS, rsa.public_data, rsa.sign(DATA, name)) is None
    assert signature_refusal(DEFAULTS | {"ssh-rsa"}, rsa.public_data, sha1) is None


def test_regression_ssh_dss_user_key_was_accepted_by_default(dsa: asyncssh.SSHKey) -> None:
    signed = dsa.sign(DATA, b"ssh-dss")
    refusal = "no accepted signature algorithm for a ssh-dss key"
    assert signature_refusal(DEFAULTS, dsa.public_data, b"") == refusal
    assert signature_refusal(DEFAULTS, dsa.public_data, signed) == refusal
    assert signature_refusal(DEFAULTS | {"ssh-dss"}, dsa.public_data, signed) is None


def test_regression_dsa_user_certificate_was_accepted_by_default(dsa: asyncssh.SSHKey) -> None:
    ca = key("ssh-ed25519")
    certificate = ca.generate_user_certificate(dsa, "id", principals=["s"])
    assert certificate.algorithm == b"ssh-dss-cert-v01@openssh.com"
    signed = dsa.sign(DATA, b"ssh-dss")
    assert signature_refusal(DEFAULTS, certificate.public_data, signed) == (
        "no accepted signature algorithm for a ssh-dss key"
    )
    assert signature_refusal(DEFAULTS | {"ssh-dss"}, certificate.public_data, signed) is None


def test_a_certificate_signed_by_its_ca_with_sha1_is_refused(rsa: asyncssh.SSHKey) -> None:
    user = key("ssh-ed25519")
    certificate = rsa.generate_user_certificate(user, "id", principals=["s"], sig_alg="ssh-rsa")
    signed = user.sign(DATA, b"ssh-ed25519")
    assert signature_refusal(DEFAULTS, certificate.public_data, signed) == (
        "the certificate's CA signature algorithm ssh-rsa is not accepted"
    )
    assert signature_refusal(DEFAULTS | {"ssh-rsa"}, certificate.public_data, signed) is None
    sha2 = rsa.generate_user_certificate(user, "id", principals=["s"], sig_alg="rsa-sha2-512")
    assert signature_refusal(DEFAULTS, sha2.public_data, signed) is None
