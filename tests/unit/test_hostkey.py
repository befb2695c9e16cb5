import stat
from pathlib import Path

import asyncssh
import pytest

from sandbox_ssh._ssh.hostkey import HostKeyError, load_host_keys, load_or_create_host_key


def test_new_key_is_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "key"
    first = load_or_create_host_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert first.algorithm == b"ssh-ed25519"
    again = load_or_create_host_key(path)
    assert again.export_public_key() == first.export_public_key()


def test_corrupt_key_is_refused_and_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text("garbage")
    with pytest.raises(HostKeyError, match="cannot be used"):
        load_or_create_host_key(path)
    assert path.read_text() == "garbage"


def test_regression_two_host_keys_of_one_type_stopped_the_gateway_with_a_traceback(
    tmp_path: Path,
) -> None:
    # `serve --host-key a --host-key b` with two ed25519 keys once ended in asyncssh's
    # ValueError and a traceback; now the reason is one line naming both files.
    main, extra, rsa = tmp_path / "main", tmp_path / "extra", tmp_path / "rsa"
    load_or_create_host_key(main)
    load_or_create_host_key(extra)
    rsa.write_bytes(asyncssh.generate_private_key("ssh-rsa").export_private_key())
    rsa.chmod(0o600)
    with pytest.raises(HostKeyError) as refused:
        load_host_keys(main, [rsa, extra])
    assert str(refused.value) == (
        f"host keys {main} and {extra} are both ssh-ed25519: give one host key per key type"
    )
    keys = load_host_keys(main, [rsa])
    assert [key.get_algorithm() for key in keys] == ["ssh-ed25519", "ssh-rsa"]
