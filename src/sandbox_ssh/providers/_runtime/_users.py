"""The OCI process user a `docker exec -u USER` would get, worked out from the sandbox's files.

Docker resolves the exec user against the container's /etc/passwd and
/etc/group (moby's ``getUser``, on runc's ``GetExecUser``):

* ``UID`` with a passwd entry: the entry's primary gid, plus every group that
  lists the entry's name as a member;
* ``UID`` without an entry: gid 0 and no member groups;
* ``UID:GID``: exactly that gid, and no member groups;

and then the container's ``--group-add`` groups, after the gid itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class OciUser:
    uid: int
    gid: int
    additional_gids: tuple[int, ...]

    def to_spec(self) -> dict[str, object]:
        return {"uid": self.uid, "gid": self.gid, "additionalGids": list(self.additional_gids)}


@dataclass(frozen=True)
class PasswdEntry:
    name: str
    uid: int
    gid: int


@dataclass(frozen=True)
class GroupEntry:
    name: str
    gid: int
    members: tuple[str, ...]


def parse_passwd(text: str) -> list[PasswdEntry]:
    entries = []
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) < 4 or line.startswith(("#", "+", "-")):
            continue
        if fields[2].isdigit() and fields[3].isdigit():
            entries.append(PasswdEntry(fields[0], int(fields[2]), int(fields[3])))
    return entries


def parse_group(text: str) -> list[GroupEntry]:
    entries = []
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) < 3 or line.startswith(("#", "+", "-")) or not fields[2].isdigit():
            continue
        members = tuple(m for m in (fields[3] if len(fields) > 3 else "").split(",") if m)
        entries.append(GroupEntry(fields[0], int(fields[2]), members))
    return entries


class UnknownGroup(ValueError):
    pass


def resolve_group_add(names: Sequence[str], groups: Sequence[GroupEntry]) -> list[int]:
    """``--group-add`` values as gids: numbers as they are, names through /etc/group."""
    gids = []
    for name in names:
        if name.isdigit():
            gids.append(int(name))
            continue
        found = next((g.gid for g in groups if g.name == name), None)
        if found is None:
            raise UnknownGroup(f"unable to find group {name}: no matching entries in group file")
        gids.append(found)
    return gids


def exec_user(
    uid: int,
    gid: int | None,
    passwd: Sequence[PasswdEntry],
    groups: Sequence[GroupEntry],
    group_add: Sequence[int] = (),
) -> OciUser:
    """The user of ``docker exec -u UID[:GID]``; ``gid`` None is the ``UID`` form."""
    entry = next((p for p in passwd if p.uid == uid), None)
    members: list[int] = []
    if gid is None:
        gid = entry.gid if entry else 0
        if entry is not None:
            members = [g.gid for g in groups if entry.name in g.members]
    return OciUser(uid=uid, gid=gid, additional_gids=(gid, *members, *group_add))


def passwd_primary_gid(uid: int, passwd: Sequence[PasswdEntry]) -> int | None:
    entry = next((p for p in passwd if p.uid == uid), None)
    return entry.gid if entry else None
