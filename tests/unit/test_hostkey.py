import stat
from pathlib import Path

import pytest

from sandbox_ssh._ssh.hostkey import HostKeyError, load_or_create_host_key


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
