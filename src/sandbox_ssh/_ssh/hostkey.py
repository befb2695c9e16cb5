"""Loading the host key, or creating it on first start."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Sequence
from pathlib import Path

import asyncssh


class HostKeyError(Exception):
    """The host key cannot be used; the gateway must not start."""


def load_host_key(path: str | Path) -> asyncssh.SSHKey:
    """Read a host key, refusing one that the group or others may read."""
    key_path = Path(path).expanduser()
    try:
        mode = key_path.stat().st_mode
    except OSError as error:
        raise HostKeyError(f"host key {key_path} cannot be used: {error.strerror}") from error
    if mode & 0o077:
        raise HostKeyError(
            f"host key {key_path} cannot be used: it is readable by group or others "
            f"(mode {stat.S_IMODE(mode):04o}); run chmod 600 on it"
        )
    try:
        return asyncssh.read_private_key(str(key_path))
    except (OSError, asyncssh.KeyImportError, ValueError) as error:
        # Never overwrite: the file may be a key an operator cares about.
        raise HostKeyError(f"host key {key_path} cannot be used: {error}") from error


def load_host_keys(path: str | Path, extra_paths: Sequence[str | Path]) -> list[asyncssh.SSHKey]:
    """The main key (made on first start) and the extra ones, at most one per key type:
    a client is offered one host key per algorithm, as sshd allows one HostKey per type."""
    keys = [load_or_create_host_key(path)]
    path_of_type = {keys[0].get_algorithm(): Path(path).expanduser()}
    for extra in map(Path, extra_paths):
        key = load_host_key(extra)
        earlier = path_of_type.setdefault(key.get_algorithm(), extra.expanduser())
        if earlier != extra.expanduser():
            raise HostKeyError(
                f"host keys {earlier} and {extra.expanduser()} are both "
                f"{key.get_algorithm()}: give one host key per key type"
            )
        keys.append(key)
    return keys


def load_or_create_host_key(path: str | Path) -> asyncssh.SSHKey:
    """Read the key at ``path``; when there is no file, write a new ed25519 key there (0600)."""
    key_path = Path(path).expanduser()
    if key_path.exists() or key_path.is_symlink():
        return load_host_key(key_path)
    key = asyncssh.generate_private_key("ssh-ed25519", comment="sandbox-ssh host key")
    try:
        key_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(key.export_private_key())
        os.chmod(key_path, 0o600)  # the umask may have narrowed it; never widened
        public_path = key_path.with_name(key_path.name + ".pub")
        with contextlib.suppress(OSError):
            public_path.write_bytes(key.export_public_key())
    except OSError as error:
        raise HostKeyError(f"cannot write a new host key to {key_path}: {error}") from error
    return key
