"""Sandboxes as Docker containers labelled with their session ID."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, Generic, Literal, TypeVar

import aiodocker
import aiohttp

from ...hooks import (
    BoundListener,
    ProcessSpec,
    Sandbox,
    SandboxError,
    SandboxProcess,
    SandboxStatus,
    UserInfo,
)
from .. import _posix
from .._runtime import RuntimeProcess, RuntimeUnavailable
from .._runtime._process import RefusedProcess
from ._client import (
    UNREACHABLE,
    engine_error,
    is_unreachable,
    open_client,
    resolve_docker_host,
    runtime_errors,
    unreachable_reason,
)
from ._exec import Attached, ExecControl, attach, hijack, run_short
from ._launch import ExecLaunch, Launch, RuntimeLaunch
from ._network import DockerNetwork
from ._process import DETACH_KEYS, DockerProcess
from ._runtime_path import RuntimePath

log = logging.getLogger("sandbox_ssh.docker")
T = TypeVar("T")
ExecPath = Literal["auto", "runtime", "api"]
# Docker 19.03's; everything the provider uses is older.
MIN_API_VERSION = (1, 40)


class _EngineNotAnswering(Exception):
    """The engine did not answer at start-up; the checks are made again later."""


EXEC_PATHS: tuple[ExecPath, ...] = ("auto", "runtime", "api")
DEFAULT_LABEL = "sandbox-ssh.session"
AUTHORIZED_KEYS_LABEL = "sandbox-ssh.authorized-keys"
_STATUS_BY_STATE = {
    "running": SandboxStatus.RUNNING,
    "created": SandboxStatus.STOPPED,
    "exited": SandboxStatus.STOPPED,
    "paused": SandboxStatus.PAUSED,
}
_START_WAIT = 30.0
_USER_CACHE_SECONDS = 60.0

# The primary gid the sandbox's passwd gives a uid (empty when it has no entry).
_PRIMARY_GID_SCRIPT = r"""
entry=$(getent passwd "$1" 2>/dev/null)
if [ -z "$entry" ] && [ -r /etc/passwd ]; then
    while IFS=: read -r n x u g rest; do
        if [ "$u" = "$1" ]; then entry="$n:$x:$u:$g"; break; fi
    done </etc/passwd
fi
gid=${entry#*:*:*:}
echo "${gid%%:*}"
"""

K = TypeVar("K")
V = TypeVar("V")


class _Expiring(Generic[K, V]):
    """Answers kept for a while: users and groups in a sandbox rarely change."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._entries: dict[K, tuple[float, V]] = {}

    async def get_or_compute(self, key: K, compute: Callable[[], Awaitable[V]]) -> V:
        entry = self._entries.get(key)
        if entry is not None and time.monotonic() - entry[0] < self._seconds:
            return entry[1]
        value = await compute()
        self._entries[key] = (time.monotonic(), value)
        return value


class DockerProvider:
    """Finds sandboxes by label and runs processes in them.

    ``exec_path`` picks how processes start. ``"runtime"``: through the
    container's OCI runtime (runc, crun), with the bytes going straight between
    the process and the gateway; this needs the gateway to run as root on the
    Docker host, with the local socket. ``"api"``: through the Engine API's exec
    (dockerd, containerd and the shim copy every byte), which works anywhere.
    ``"auto"`` (the default) takes the runtime path when the host allows it,
    and otherwise logs why once and uses the API.

    Also a :class:`~sandbox_ssh.SandboxEnsurer` (starts a stopped or paused
    container), a :class:`~sandbox_ssh.UserInfoFetcher` (the container's
    configured ``User``, resolved inside it) and a
    :class:`~sandbox_ssh.SandboxNetwork` (sockets made inside the container's
    namespaces, when the gateway runs as root on the Docker host).
    """

    def __init__(
        self,
        docker_host: str | None = None,
        label: str = DEFAULT_LABEL,
        *,
        hangup_grace: float = 2.0,
        exec_path: ExecPath = "auto",
        answer_timeout: float = _posix.PID_LINE_TIMEOUT,
    ) -> None:
        if exec_path not in EXEC_PATHS:
            raise ValueError(f"exec_path must be one of {', '.join(EXEC_PATHS)}")
        self.label = label
        self.exec_path_setting: ExecPath = exec_path
        self._docker_host = docker_host
        self._hangup_grace = hangup_grace
        # Longest the sandbox may take to answer a start or a lookup (its root controls it).
        self._answer_timeout = answer_timeout
        self._client: aiodocker.Docker | None = None
        self._connector: aiohttp.BaseConnector | None = None
        self._user_cache: _Expiring[str, UserInfo] = _Expiring(_USER_CACHE_SECONDS)
        self._gid_cache: _Expiring[tuple[str, int], int | None] = _Expiring(_USER_CACHE_SECONDS)
        self._in_flight: dict[tuple[str, str], asyncio.Future[Any]] = {}
        self._local = resolve_docker_host(docker_host).startswith("unix://")
        self._network = DockerNetwork(lambda: self.docker, self._local)
        self._runtime: RuntimePath | None = (
            RuntimePath(lambda: self.docker, hangup_grace) if exec_path != "api" else None
        )
        self._prepared: asyncio.Future[None] | None = None
        self._runtime_warnings: set[str] = set()

    @property
    def docker(self) -> aiodocker.Docker:
        # Created lazily: aiohttp sessions belong to the loop that first uses them.
        if self._client is None:
            self._client, self._connector = open_client(self._docker_host)
        return self._client

    @property
    def exec_path(self) -> Literal["runtime", "api"] | None:
        """The path in use once prepared; None before."""
        if self._prepared is None or not self._prepared.done():
            return None
        return "runtime" if self._runtime is not None else "api"

    async def prepare(self) -> None:
        """Check the engine and choose the exec path, logging both (once); raise when the
        engine is too old or ``runtime`` was required and is unavailable.

        An engine that does not answer yet is a warning, not an error: the choice is made
        again at the first process start, and connections are refused until then.
        """
        if self._prepared is None:
            self._prepared = asyncio.ensure_future(self._choose_exec_path())
        try:
            await asyncio.shield(self._prepared)
        except _EngineNotAnswering:
            self._prepared = None

    async def health(self) -> str | None:
        """None while the engine answers; else why not (for /readyz)."""
        try:
            await self.docker.version()
        except (*UNREACHABLE, aiodocker.DockerError) as error:
            if is_unreachable(error):
                return f"the sandbox runtime is unavailable: {unreachable_reason(error)}"
            return f"the sandbox runtime failed: {getattr(error, 'message', error)}"
        return None

    async def _check_engine(self) -> None:
        host = resolve_docker_host(self._docker_host)
        try:
            version = await self.docker.version()
        except (*UNREACHABLE, aiodocker.DockerError) as error:
            if not is_unreachable(error):
                raise SandboxError(
                    f"the Docker Engine at {host} failed: {getattr(error, 'message', error)}"
                ) from None
            reason = unreachable_reason(error)
            hint = (
                " (the gateway's user may not use the Docker socket: run it as root, or in "
                "the docker group)"
                if "permission denied" in reason.lower()
                else ""
            )
            log.warning(
                "the Docker Engine at %s does not answer: %s%s; sessions are refused until it does",
                host,
                reason,
                hint,
            )
            raise _EngineNotAnswering(reason) from error
        api = str(version.get("ApiVersion") or "0")
        if tuple(int(n) for n in api.split(".")[:2] if n.isdigit()) < MIN_API_VERSION:
            minimum = ".".join(map(str, MIN_API_VERSION))
            raise SandboxError(
                f"the Docker Engine at {host} speaks API {api}; sandbox-ssh needs {minimum} or "
                "newer (Docker 19.03 or later)"
            )

    async def _choose_exec_path(self) -> None:
        await self._check_engine()
        if self._runtime is None:
            log.info("exec path: api (--exec-path api)")
            return
        try:
            binary = await self._runtime.check_host(self._local)
        except RuntimeUnavailable as error:
            if self.exec_path_setting == "runtime":
                raise SandboxError(f"--exec-path runtime is unavailable: {error}") from None
            log.warning("exec path: api, because the runtime path is unavailable: %s", error)
            runtime, self._runtime = self._runtime, None
            await runtime.close()
            return
        log.info("exec path: runtime (%s; %s)", binary.describe(), binary.fix_evidence)

    async def close(self) -> None:
        if self._runtime is not None:
            await self._runtime.close()
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()
        if self._connector is not None:
            connector, self._connector = self._connector, None
            await connector.close()

    async def _coalesced(self, key: tuple[str, str], call: Callable[[], Awaitable[T]]) -> T:
        """Concurrent identical queries share one API call (a connection storm makes many)."""
        running = self._in_flight.get(key)
        if running is None:
            running = asyncio.ensure_future(call())
            self._in_flight[key] = running
            running.add_done_callback(lambda _: self._in_flight.pop(key, None))
        result: T = await asyncio.shield(running)
        return result

    async def find_sandbox(self, session_id: str) -> Sandbox | None:
        with runtime_errors():
            return await self._coalesced(("find", session_id), lambda: self._find(session_id))

    async def _find(self, session_id: str) -> Sandbox | None:
        try:
            containers = await self.docker.containers.list(
                all=True, filters={"label": [f"{self.label}={session_id}"]}
            )
        except aiodocker.DockerError as error:
            raise engine_error(error, "the container runtime failed") from error
        # The engine's filter already matches exactly; check again rather than trust it.
        matches = [c for c in containers if (c["Labels"] or {}).get(self.label) == session_id]
        if not matches:
            return None
        if len(matches) > 1:
            raise SandboxError(
                f'{len(matches)} containers carry label {self.label}="{session_id}"; '
                "a session must have exactly one sandbox"
            )
        found: dict[str, Any] = matches[0]._container
        names = found.get("Names") or [""]
        return Sandbox(
            session_id=session_id,
            id=found["Id"],
            status=_STATUS_BY_STATE.get(found.get("State", ""), SandboxStatus.UNAVAILABLE),
            name=names[0].lstrip("/"),
            labels=dict(found.get("Labels") or {}),
        )

    async def _require(self, session_id: str) -> Sandbox:
        sandbox = await self.find_sandbox(session_id)
        if sandbox is None:
            raise SandboxError("no sandbox with this session ID")
        return sandbox

    async def ensure_sandbox(self, session_id: str) -> None:
        with runtime_errors():
            await self._ensure(session_id)

    async def _ensure(self, session_id: str) -> None:
        sandbox = await self._require(session_id)
        if sandbox.status is SandboxStatus.RUNNING:
            return
        container = self.docker.containers.container(sandbox.id)
        try:
            if sandbox.status is SandboxStatus.PAUSED:
                await container.unpause()
            elif sandbox.status is SandboxStatus.STOPPED:
                await container.start()
            else:
                raise SandboxError(f'the sandbox of session "{session_id}" cannot be started now')
        except aiodocker.DockerError as error:
            what = f'the sandbox of session "{session_id}" failed to start'
            raise engine_error(error, what) from error
        await self._wait_running(session_id, sandbox.id)

    async def _wait_running(self, session_id: str, container_id: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _START_WAIT
        delay = 0.01
        while True:
            info = await self.docker.containers.container(container_id).show()
            state = info.get("State", {})
            if state.get("Running") and not state.get("Paused") and not state.get("Restarting"):
                return
            if state.get("Status") in ("exited", "dead"):
                raise SandboxError(
                    f'the sandbox of session "{session_id}" exited right after starting '
                    f"(exit code {state.get('ExitCode')})"
                )
            if loop.time() > deadline:
                raise SandboxError(f'the sandbox of session "{session_id}" did not start in time')
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)

    async def get_authorized_keys(self, sandbox: Sandbox) -> str:
        """authorized_keys lines from the container's ``sandbox-ssh.authorized-keys`` label."""
        return str(sandbox.labels.get(AUTHORIZED_KEYS_LABEL, ""))

    async def stop_sandbox(self, session_id: str) -> None:
        with runtime_errors():
            await self._stop(session_id)

    async def _stop(self, session_id: str) -> None:
        sandbox = await self.find_sandbox(session_id)
        if sandbox is None or sandbox.status is not SandboxStatus.RUNNING:
            return
        try:
            await self.docker.containers.container(sandbox.id).stop(t=10)
        except aiodocker.DockerError as error:
            raise engine_error(error, "cannot stop the sandbox") from error

    async def get_user_info(self, session_id: str) -> UserInfo:
        with runtime_errors():
            return await self._coalesced(("user", session_id), lambda: self._user_info(session_id))

    async def _user_info(self, session_id: str) -> UserInfo:
        sandbox = await self._require(session_id)
        # A container's configured User is fixed when it is created: one answer per container.
        return await self._user_cache.get_or_compute(
            sandbox.id, lambda: self._configured_user(sandbox.id, session_id)
        )

    async def _configured_user(self, container_id: str, session_id: str) -> UserInfo:
        info = await self.docker.containers.container(container_id).show()
        configured = (info.get("Config") or {}).get("User") or ""
        if not configured:
            return UserInfo(username="root", uid=0, gid=0)
        return await self._resolve_user(container_id, configured, session_id)

    async def _resolve_user(self, container_id: str, configured: str, session_id: str) -> UserInfo:
        what = f'cannot resolve user "{configured}" in the sandbox of session "{session_id}"'
        await self._network.check_account_files(container_id)
        try:
            exit_code, output = await run_short(
                self.docker, container_id, _posix.WHOAMI_ARGV, configured, self._answer_timeout
            )
        except aiodocker.DockerError as error:
            raise engine_error(error, what) from error
        user = _posix.parse_whoami(output) if exit_code == 0 else None
        if user is None:
            raise SandboxError(what)
        return user

    async def start_process(self, sandbox: Sandbox, spec: ProcessSpec) -> SandboxProcess:
        with runtime_errors():
            return await self._start_process(sandbox, spec)

    async def _start_process(self, sandbox: Sandbox, spec: ProcessSpec) -> SandboxProcess:
        await self.prepare()
        launched = await self._launch_on_runtime(sandbox, spec)
        if isinstance(launched, RefusedProcess):
            return launched
        if launched is not None:
            return RuntimeProcess(launched.launcher, launched.launched)
        process = DockerProcess(
            self.docker,
            sandbox.id,
            tty=spec.terminal is not None,
            hangup_grace=self._hangup_grace,
            answer_timeout=self._answer_timeout,
            before_exec=lambda: self._network.check_account_files(sandbox.id),
        )
        await self._network.check_account_files(sandbox.id)
        await process.start(spec, await self._exec_user(sandbox.id, spec.user))
        return process

    async def _launch_on_runtime(
        self, sandbox: Sandbox, spec: ProcessSpec
    ) -> RuntimeLaunch | RefusedProcess | None:
        """The runtime path's start; None when it cannot serve this sandbox (auto)."""
        if self._runtime is None:
            return None
        try:
            launched = await self._runtime.launch(sandbox, spec)
        except RuntimeUnavailable as error:
            if self.exec_path_setting == "runtime":
                raise SandboxError(f"the runtime path is unavailable: {error}") from None
            reason = str(error)
            if reason not in self._runtime_warnings:
                self._runtime_warnings.add(reason)
                log.warning("using the exec API for %s: %s", sandbox.id[:12], reason)
            return None
        if isinstance(launched, RefusedProcess):
            return launched
        return RuntimeLaunch(launched, self._runtime.launcher)

    def handover_problem(self) -> str | None:
        """Why exec streams of this engine cannot be handed to another process, or None.

        A stream is handed over as the connection's descriptor; inside TLS it is the
        TLS session, which stays in the process that made it.
        """
        host = resolve_docker_host(self._docker_host)
        if host.startswith("https://") or (
            not host.startswith("unix://") and os.environ.get("DOCKER_TLS_VERIFY")
        ):
            return (
                f"the exec streams of a TLS Docker endpoint ({host}) cannot be handed to the "
                "unprivileged front; run the gateway on the Docker host (unix socket)"
            )
        return None

    async def launch(self, sandbox: Sandbox, spec: ProcessSpec) -> Launch:
        """Start a process whose stdio another process will own (the broker's start).

        The runtime path gives the descriptors at once; Docker's exec API gives a stream
        on a connection of its own, once the sandbox's PID line has been read from it.
        """
        with runtime_errors():
            await self.prepare()
            launched = await self._launch_on_runtime(sandbox, spec)
            if launched is not None:
                return launched
            problem = self.handover_problem()
            if problem:
                raise SandboxError(problem)
            return await self._launch_exec(sandbox, spec)

    async def _launch_exec(self, sandbox: Sandbox, spec: ProcessSpec) -> ExecLaunch:
        await self._network.check_account_files(sandbox.id)
        exec_user = await self._exec_user(sandbox.id, spec.user)
        tty = spec.terminal is not None
        container = self.docker.containers.container(sandbox.id)
        try:
            execution = await container.exec(
                _posix.pid_report_argv(spec.argv, spec.terminal),
                stdin=True,
                tty=tty,
                user=exec_user,
                environment=dict(spec.env),
                workdir=spec.workdir,
                detach_keys=DETACH_KEYS,
            )
        except aiodocker.DockerError as error:
            raise engine_error(error, "the sandbox refused the process") from error
        control = ExecControl(
            self.docker,
            sandbox.id,
            execution,
            tty=tty,
            exec_user=exec_user,
            hangup_grace=self._hangup_grace,
            before_exec=lambda: self._network.check_account_files(sandbox.id),
        )
        host = resolve_docker_host(self._docker_host)
        hijacked = await hijack(
            host, self.docker.api_version, execution.id, tty, self._answer_timeout
        )

        async def log_in() -> Attached:
            attached = await attach(hijacked, tty, self._answer_timeout)
            control.pid = attached.pid
            return attached

        return ExecLaunch(control, asyncio.ensure_future(log_in()))

    async def _exec_user(self, container_id: str, user: UserInfo) -> str:
        """The exec ``User`` that gives the process the sandbox's supplementary groups.

        runc adds the groups of /etc/group only when no group is named and the uid
        has a passwd entry, and then takes the passwd's primary gid; so the group is
        named only when it differs (the process then has no supplementary groups).
        """
        if user.uid == 0 and user.gid == 0:
            return "0"
        primary_gid = await self._gid_cache.get_or_compute(
            (container_id, user.uid), lambda: self._primary_gid(container_id, user.uid)
        )
        return str(user.uid) if primary_gid == user.gid else f"{user.uid}:{user.gid}"

    async def _primary_gid(self, container_id: str, uid: int) -> int | None:
        argv = ["/bin/sh", "-c", _PRIMARY_GID_SCRIPT, "sandbox-ssh", str(uid)]
        await self._network.check_account_files(container_id)
        try:
            _, output = await run_short(
                self.docker, container_id, argv, "0:0", self._answer_timeout
            )
        except aiodocker.DockerError:
            return None
        text = output.decode(errors="replace").strip()
        return int(text) if text.isdigit() else None

    # SandboxNetwork

    def forwarding_problem(self) -> str | None:
        return self._network.forwarding_problem()

    async def connect_tcp(self, sandbox: Sandbox, host: str, port: int) -> socket.socket:
        return await self._network.connect_tcp(sandbox, host, port)

    async def tcp_sockets(self, sandbox: Sandbox, host: str) -> list[tuple[socket.socket, str]]:
        """Unconnected sockets in the sandbox for each of ``host``'s addresses there."""
        return await self._network.tcp_sockets(sandbox, host)

    async def connect_unix(self, sandbox: Sandbox, path: str, user: UserInfo) -> socket.socket:
        return await self._network.connect_unix(sandbox, path, user)

    async def listen_tcp(self, sandbox: Sandbox, host: str, port: int) -> BoundListener:
        return await self._network.listen_tcp(sandbox, host, port)

    async def listen_unix(self, sandbox: Sandbox, path: str, user: UserInfo) -> BoundListener:
        return await self._network.listen_unix(sandbox, path, user)

    # AgentSocketHost

    async def listen_agent_socket(self, sandbox: Sandbox, user: UserInfo) -> BoundListener:
        return await self._network.listen_agent_socket(sandbox, user)
