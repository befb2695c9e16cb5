"""The user the fronts run as: ``--user NAME``, by default the system user ``sandbox-ssh``.

The default is created (``useradd --system``, no home, no login shell) the first time
``serve`` starts as root without it, so that starting as root needs no extra step; a
user named with ``--user`` must exist.
"""

from __future__ import annotations

import logging
import pwd
import subprocess
from dataclasses import dataclass

log = logging.getLogger("sandbox_ssh")

DEFAULT_USER = "sandbox-ssh"


class FrontUserError(Exception):
    """The front's user cannot be used; the message says why, in one line."""


@dataclass(frozen=True)
class FrontUser:
    name: str
    uid: int
    gid: int


def _lookup(name: str) -> FrontUser | None:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    return FrontUser(entry.pw_name, entry.pw_uid, entry.pw_gid)


def front_user(name: str | None) -> FrontUser:
    """The named user, or the default one (created when missing); never root."""
    found = _lookup(name or DEFAULT_USER)
    if found is None and name is None:
        created = subprocess.run(
            [
                "useradd",
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                "--comment",
                "sandbox-ssh front (unprivileged)",
                DEFAULT_USER,
            ],
            capture_output=True,
            text=True,
        )
        found = _lookup(DEFAULT_USER)  # another serve may have made it meanwhile
        if found is None:
            reason = (created.stderr or created.stdout).strip().splitlines()[-1:] or ["?"]
            raise FrontUserError(f"cannot create the system user {DEFAULT_USER}: {reason[0]}")
        if created.returncode == 0:
            log.info(
                "created the system user %s (uid %d) for the unprivileged front",
                DEFAULT_USER,
                found.uid,
            )
    if found is None:
        raise FrontUserError(f"--user {name}: no such user")
    if found.uid == 0 or found.gid == 0:
        raise FrontUserError(
            f"--user {found.name}: the front must not run as root or in group root"
        )
    return found  # with its primary group alone: supplementary groups are dropped
