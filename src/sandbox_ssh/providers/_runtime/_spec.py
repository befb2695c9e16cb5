"""The OCI process spec of a new process: the container's own, with what `docker exec` changes.

`docker exec` starts from the container's process spec (capabilities,
AppArmor and SELinux labels, ``noNewPrivileges``, rlimits, OOM score) and
replaces only args, env, cwd, user and terminal. Seccomp and cgroups are not
in the process spec: the runtime takes them from the container's state.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from ...hooks import TerminalSize
from ._users import OciUser


def merge_env(base: Sequence[str], tty: bool, extra: Mapping[str, str]) -> list[str]:
    """The container's env, then ``TERM=xterm`` with a TTY, then ``extra``, as Docker merges."""
    merged: dict[str, str] = {}
    for item in base:
        name, _, value = item.partition("=")
        merged[name] = value
    if tty:
        merged["TERM"] = "xterm"
    merged.update(extra)
    return [f"{name}={value}" for name, value in merged.items()]


def process_spec(
    container_process: Mapping[str, Any],
    argv: Sequence[str],
    env: Mapping[str, str],
    user: OciUser,
    cwd: str | None,
    terminal: TerminalSize | None,
) -> dict[str, Any]:
    spec: dict[str, Any] = copy.deepcopy(dict(container_process))
    spec.pop("consoleSize", None)
    spec["args"] = list(argv)
    spec["env"] = merge_env(container_process.get("env") or [], terminal is not None, env)
    spec["cwd"] = cwd or container_process.get("cwd") or "/"
    spec["user"] = user.to_spec()
    spec["terminal"] = terminal is not None
    if terminal is not None:
        spec["consoleSize"] = {"height": terminal.rows, "width": terminal.cols}
    return spec
