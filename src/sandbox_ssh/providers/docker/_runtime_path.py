"""The Docker provider's fast path: processes started by the container's own OCI runtime.

Docker says which runtime runs a container (``HostConfig.Runtime``, resolved
through ``docker info``'s ``Runtimes``); the runtime's own state says where
the container's bundle is, and the bundle's ``config.json`` holds the process
spec `docker exec` starts from. Nothing per process goes through dockerd.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import aiodocker

from ...hooks import ProcessSpec, Sandbox, SandboxError, SandboxProcess, UserInfo
from .. import _hostns
from .._runtime import (
    OciUser,
    RuntimeBinary,
    RuntimeLauncher,
    RuntimeProcess,
    RuntimeUnavailable,
    StartRequest,
    exec_user,
    find_runtime_binary,
    parse_group,
    parse_passwd,
    process_spec,
)
from .._runtime._launcher import Launched, StartRefused
from .._runtime._pids import pids_cgroup, pids_limit_reached
from .._runtime._process import RefusedProcess
from .._runtime._users import UnknownGroup, passwd_primary_gid, resolve_group_add
from .._threads import SHARED, SandboxTimeout
from ._aiodocker_internals import get_json
from ._client import engine_error

log = logging.getLogger("sandbox_ssh.docker")

_ACCOUNTS_SECONDS = 60.0
_UNUSABLE_SECONDS = 60.0


def _root_candidates(name: str, runtime_args: list[str]) -> list[str]:
    """Where a runtime keeps its containers' state, for Docker (and Podman)."""
    candidates = []
    for index, arg in enumerate(runtime_args):
        if arg == "--root" and index + 1 < len(runtime_args):
            candidates.append(runtime_args[index + 1])
        elif arg.startswith("--root="):
            candidates.append(arg.split("=", 1)[1])
    for run in ("/run", "/var/run"):
        candidates += [
            f"{run}/docker/runtime-{name}/moby",
            f"{run}/docker/runtime-runc/moby",
            f"{run}/containerd/runc/moby",
            f"{run}/runc",
            f"{run}/crun",
        ]
    return list(dict.fromkeys(candidates))


@dataclass(frozen=True)
class _Context:
    """What starting a process in one running container needs, fixed until it restarts."""

    container_id: str
    init_pid: int
    init_started: str
    binary: RuntimeBinary
    root: str
    process: dict[str, Any]
    group_add: tuple[str, ...]
    pids_cgroup: str | None = None

    def still_running(self) -> bool:
        return _hostns.process_start_time(self.init_pid) == self.init_started


@dataclass
class _Accounts:
    read_at: float
    passwd: list[Any]
    groups: list[Any]


class RuntimePath:
    def __init__(self, docker: Callable[[], aiodocker.Docker], hangup_grace: float) -> None:
        self._docker = docker
        self.launcher = RuntimeLauncher(hangup_grace)
        self._info: dict[str, Any] | None = None
        self._binaries: dict[str, asyncio.Future[RuntimeBinary]] = {}
        self._roots: dict[str, str] = {}
        self._contexts: dict[str, _Context] = {}
        self._building: dict[str, asyncio.Future[_Context]] = {}
        # Containers the runtime path cannot serve, and since when: not probed again for a while.
        self._unusable: dict[str, tuple[float, RuntimeUnavailable]] = {}
        self._accounts: dict[str, _Accounts] = {}
        self._reading_accounts: dict[str, asyncio.Future[_Accounts]] = {}

    async def close(self) -> None:
        await self.launcher.close()

    # Whether the host allows it at all.

    async def check_host(self, local_socket: bool) -> RuntimeBinary:
        if platform.system() != "Linux":
            raise RuntimeUnavailable("the runtime path needs a Linux host")
        if os.geteuid() != 0:
            raise RuntimeUnavailable("the runtime path needs the gateway to run as root")
        if not local_socket:
            raise RuntimeUnavailable("the runtime path needs Docker's local unix socket")
        if not hasattr(os, "pidfd_open"):
            raise RuntimeUnavailable("the runtime path needs pidfd (Linux 5.3 or newer)")
        info = await self._docker_info()
        return await self._binary(str(info.get("DefaultRuntime") or "runc"))

    async def _docker_info(self) -> dict[str, Any]:
        if self._info is None:
            try:
                self._info = dict(await self._docker().system.info())
            except aiodocker.DockerError as error:
                raise RuntimeUnavailable(f"docker info failed: {error.message}") from error
        return self._info

    async def _runtime_entry(self, name: str) -> dict[str, Any]:
        runtimes = (await self._docker_info()).get("Runtimes") or {}
        entry = runtimes.get(name)
        if not isinstance(entry, dict):
            raise RuntimeUnavailable(f"Docker does not list the runtime {name!r}")
        return entry

    async def _binary(self, name: str) -> RuntimeBinary:
        found = self._binaries.get(name)
        if found is None:
            path = str((await self._runtime_entry(name)).get("path") or name)
            found = asyncio.ensure_future(asyncio.to_thread(find_runtime_binary, path))
            self._binaries[name] = found
        return await asyncio.shield(found)

    # Per container.

    async def _context(self, container_id: str) -> _Context:
        context = self._contexts.get(container_id)
        if context is not None and context.still_running():
            return context
        known = self._unusable.get(container_id)
        if known is not None and time.monotonic() - known[0] < _UNUSABLE_SECONDS:
            raise known[1]
        try:
            return await self._fresh_context(container_id)
        except RuntimeUnavailable as error:
            self._unusable[container_id] = (time.monotonic(), error)
            raise

    async def _fresh_context(self, container_id: str) -> _Context:
        building = self._building.get(container_id)
        if building is None:
            building = asyncio.ensure_future(self._build_context(container_id))
            self._building[container_id] = building
            building.add_done_callback(lambda _: self._building.pop(container_id, None))
        context = await asyncio.shield(building)
        self._contexts[container_id] = context
        return context

    async def _build_context(self, container_id: str) -> _Context:
        try:
            info = await self._docker().containers.container(container_id).show()
        except aiodocker.DockerError as error:
            raise engine_error(error, "the container runtime failed") from error
        state = info.get("State") or {}
        if not state.get("Running") or state.get("Paused"):
            raise SandboxError("the sandbox is not running")
        host_config = info.get("HostConfig") or {}
        name = await self._runtime_name(container_id, host_config)
        binary = await self._binary(name)
        root, runtime_state = await self._find_state(name, binary, container_id)
        init_pid = int(state.get("Pid") or 0)
        if int(runtime_state.get("pid") or 0) != init_pid:
            raise RuntimeUnavailable(
                f"the runtime's state of {container_id[:12]} disagrees with Docker's "
                "(is the gateway in the host's PID namespace?)"
            )
        started = _hostns.process_start_time(init_pid)
        if started is None:
            raise RuntimeUnavailable(
                "the sandbox's processes are not visible here "
                "(the runtime path needs the host's PID namespace)"
            )
        bundle = str(runtime_state.get("bundle") or "")
        try:
            config = await SHARED.run(
                container_id, partial(_read_json, os.path.join(bundle, "config.json"))
            )
        except (OSError, ValueError) as error:
            raise RuntimeUnavailable(f"cannot read the container's bundle: {error}") from error
        return _Context(
            container_id=container_id,
            init_pid=init_pid,
            init_started=started,
            binary=binary,
            root=root,
            process=dict(config.get("process") or {}),
            group_add=tuple(str(g) for g in host_config.get("GroupAdd") or ()),
            pids_cgroup=pids_cgroup(init_pid),
        )

    async def _runtime_name(self, container_id: str, host_config: dict[str, Any]) -> str:
        info = await self._docker_info()
        name = str(host_config.get("Runtime") or info.get("DefaultRuntime") or "runc")
        if name in (info.get("Runtimes") or {}):
            return name
        # Podman's Docker-compatible API says "oci" for every runtime; libpod's own JSON
        # names the real one.
        try:
            libpod = await get_json(self._docker(), f"libpod/containers/{container_id}/json")
        except aiodocker.DockerError:
            return name
        return str(libpod.get("OCIRuntime") or name)

    async def _find_state(
        self, name: str, binary: RuntimeBinary, container_id: str
    ) -> tuple[str, dict[str, Any]]:
        known = self._roots.get(name)
        entry = await self._runtime_entry(name)
        candidates = [known] if known else []
        candidates += _root_candidates(name, list(entry.get("runtimeArgs") or []))
        for root in candidates:
            try:
                state = await SHARED.run(
                    container_id, partial(_state_if_present, binary, root, container_id)
                )
            except (RuntimeUnavailable, SandboxTimeout):
                continue
            if state is None:
                continue
            self._roots[name] = root
            return root, state
        raise RuntimeUnavailable(f"cannot find the state directory of the runtime {name!r}")

    async def _user(self, context: _Context, user: UserInfo) -> OciUser:
        accounts = await self._read_accounts(context)
        # The same user string the API path gives Docker (see DockerProvider._exec_user).
        explicit_gid: int | None = None
        if not (user.uid == 0 and user.gid == 0):
            primary = passwd_primary_gid(user.uid, accounts.passwd)
            explicit_gid = None if primary == user.gid else user.gid
        try:
            group_add = resolve_group_add(context.group_add, accounts.groups)
        except UnknownGroup as error:
            raise SandboxError(str(error)) from error
        return exec_user(user.uid, explicit_gid, accounts.passwd, accounts.groups, group_add)

    async def _read_accounts(self, context: _Context) -> _Accounts:
        """passwd and group as the sandbox has them, read once for concurrent starts."""
        key = context.container_id
        accounts = self._accounts.get(key)
        if accounts is not None and time.monotonic() - accounts.read_at <= _ACCOUNTS_SECONDS:
            return accounts
        reading = self._reading_accounts.get(key)
        if reading is None:

            async def read() -> _Accounts:
                passwd = await _read_in_sandbox(context.init_pid, "/etc/passwd")
                groups = await _read_in_sandbox(context.init_pid, "/etc/group")
                return _Accounts(time.monotonic(), parse_passwd(passwd), parse_group(groups))

            reading = asyncio.ensure_future(read())
            self._reading_accounts[key] = reading
            reading.add_done_callback(lambda _: self._reading_accounts.pop(key, None))
        accounts = await asyncio.shield(reading)
        self._accounts[key] = accounts
        return accounts

    # Starting.

    async def start(self, sandbox: Sandbox, spec: ProcessSpec) -> SandboxProcess:
        launched = await self.launch(sandbox, spec)
        if isinstance(launched, RefusedProcess):
            return launched
        return RuntimeProcess(self.launcher, launched)

    async def launch(self, sandbox: Sandbox, spec: ProcessSpec) -> Launched | RefusedProcess:
        """Start the process; its stdio are the descriptors in the result, its control the
        launcher's (the broker hands them to the front as they are)."""
        context = await self._context(sandbox.id)
        limit = pids_limit_reached(context.pids_cgroup)
        if limit is not None:
            raise SandboxError(
                f"the sandbox has no free process ID (its limit of {limit} is reached)"
            )
        oci_spec = process_spec(
            context.process,
            spec.argv,
            spec.env,
            await self._user(context, spec.user),
            spec.workdir,
            spec.terminal,
        )
        request = StartRequest(
            binary=context.binary,
            root=context.root,
            container_id=sandbox.id,
            sandbox_pid=context.init_pid,
            spec=oci_spec,
            tty=spec.terminal is not None,
        )
        try:
            return await self.launcher.start(request)
        except StartRefused as refusal:
            return self._refused(sandbox.id, str(refusal))

    def _refused(self, container_id: str, reason: str) -> RefusedProcess:
        """Docker's mapping of a refused exec (moby's translateContainerdStartErr)."""
        lowered = reason.lower()
        if "executable file not found" in lowered or "no such file or directory" in lowered:
            return RefusedProcess(reason, 127)
        if "permission denied" in lowered:
            return RefusedProcess(reason, 126)
        self._contexts.pop(container_id, None)
        if "not running" in lowered or "stopped" in lowered or "paused" in lowered:
            raise SandboxError("the sandbox is not running")
        raise SandboxError(f"the runtime refused the process: {reason}")


def _state_if_present(binary: RuntimeBinary, root: str, container_id: str) -> dict[str, Any] | None:
    if not os.path.isdir(os.path.join(root, container_id)):
        return None
    return binary.state(root, container_id)


def _read_json(path: str) -> dict[str, Any]:
    with open(path) as config:
        loaded: dict[str, Any] = json.load(config)
    return loaded


async def _read_in_sandbox(pid: int, path: str) -> str:
    return (await _hostns.read_checked_file(pid, path)).decode(errors="replace")
