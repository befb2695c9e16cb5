"""The front's provider: every call a request to the privileged broker, answered with data or
descriptors; the session's bytes then flow between the front and the sandbox directly."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from ...hooks import (
    BoundListener,
    ProcessSpec,
    Sandbox,
    SandboxError,
    SandboxProcess,
    SandboxStatus,
    UserInfo,
)
from .._runtime._process import RefusedProcess
from ..docker._network import connect_first
from ..docker._provider import AUTHORIZED_KEYS_LABEL
from ._client import HELPER_GONE, BrokerClient, BrokerRefused
from ._process import ExecStreamProcess, runtime_process

log = logging.getLogger("sandbox_ssh.broker")

_MAX_HANDLES = 4096


def _user(user: UserInfo) -> dict[str, Any]:
    return {"username": user.username, "uid": user.uid, "gid": user.gid}


def _socket(fds: list[int]) -> socket.socket:
    (fd,) = fds
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    return sock


class BrokerProvider:
    """A :class:`~sandbox_ssh.SandboxProvider` whose sandboxes the privileged broker serves.

    Also a ``SandboxEnsurer``, ``UserInfoFetcher``, ``SandboxStopper``,
    ``SandboxNetwork``, ``AgentSocketHost``, ``AuthorizedKeysSource``,
    ``HealthReporter`` and ``PreparedProvider``, as the Docker provider behind the
    broker is. ``sock`` is this front's end of the socketpair the broker serves.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._client = BrokerClient(sock)
        self._hello: dict[str, Any] | None = None
        # (session ID, container ID) -> the broker's handle for that sandbox.
        self._handles: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._warned = False
        self._client.on_lost(self._lost)

    @classmethod
    def spawn(
        cls, broker_args: Sequence[str] = (), python: str = sys.executable
    ) -> tuple[BrokerProvider, subprocess.Popen[bytes]]:
        """Start a broker as this process's child, serving this provider alone.

        For tests and embedders whose launcher runs as root: the broker then has this
        process's privileges, so it separates nothing unless this process drops its own.
        """
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            process = subprocess.Popen(
                [
                    python,
                    "-m",
                    "sandbox_ssh._broker",
                    "--front",
                    str(theirs.fileno()),
                    *broker_args,
                ],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
            )
        finally:
            theirs.close()
        return cls(ours), process

    @property
    def lost(self) -> str | None:
        """Why the broker can no longer be asked anything, or None while it can."""
        return self._client.lost

    def on_lost(self, callback: Any) -> None:
        self._client.on_lost(callback)

    def _lost(self, why: str) -> None:
        log.error("%s (%s): new sessions are refused", HELPER_GONE, why)

    @property
    def exec_path(self) -> str | None:
        return None if self._hello is None else self._hello.get("exec_path")

    async def prepare(self) -> None:
        if self._hello is None:
            self._hello, _ = await self._client.request("hello")
            log.info("privileged helper: exec path %s", self._hello.get("exec_path"))

    async def health(self) -> str | None:
        try:
            result, _ = await self._client.request("health")
        except SandboxError as error:
            return str(error)
        problem = result.get("problem")
        return str(problem) if problem else None

    async def close(self) -> None:
        self._client.close()

    # Sandboxes.

    async def find_sandbox(self, session_id: str) -> Sandbox | None:
        result, _ = await self._client.request("find", session_id=session_id)
        found = result.get("sandbox")
        if found is None:
            return None
        sandbox = Sandbox(
            session_id=session_id,
            id=str(found["id"]),
            status=SandboxStatus(found["status"]),
            name=str(found.get("name") or ""),
            labels=dict(found.get("labels") or {}),
        )
        key = (session_id, sandbox.id)
        self._handles[key] = int(found["handle"])
        self._handles.move_to_end(key)
        while len(self._handles) > _MAX_HANDLES:
            self._handles.popitem(last=False)
        return sandbox

    async def _handle(self, sandbox: Sandbox, refind: bool = False) -> int:
        handle = None if refind else self._handles.get((sandbox.session_id, sandbox.id))
        if handle is None:
            found = await self.find_sandbox(sandbox.session_id)
            if found is None or found.id != sandbox.id:
                raise SandboxError("the sandbox is not running")
            handle = self._handles[(sandbox.session_id, sandbox.id)]
        return handle

    async def _on_sandbox(
        self, sandbox: Sandbox, op: str, **arguments: Any
    ) -> tuple[dict[str, Any], list[int]]:
        """A request about a sandbox, finding it again once if the broker let its handle go."""
        try:
            return await self._client.request(op, sandbox=await self._handle(sandbox), **arguments)
        except BrokerRefused as refusal:
            if refusal.kind != "stale_handle":
                raise
        handle = await self._handle(sandbox, refind=True)
        return await self._client.request(op, sandbox=handle, **arguments)

    async def ensure_sandbox(self, session_id: str) -> None:
        await self._client.request("ensure", session_id=session_id)

    async def stop_sandbox(self, session_id: str) -> None:
        await self._client.request("stop", session_id=session_id)

    async def get_user_info(self, session_id: str) -> UserInfo:
        result, _ = await self._client.request("user", session_id=session_id)
        return UserInfo(username=result["username"], uid=result["uid"], gid=result["gid"])

    async def get_authorized_keys(self, sandbox: Sandbox) -> str:
        """authorized_keys lines from the container's ``sandbox-ssh.authorized-keys`` label."""
        return str(sandbox.labels.get(AUTHORIZED_KEYS_LABEL, ""))

    # Processes.

    async def start_process(self, sandbox: Sandbox, spec: ProcessSpec) -> SandboxProcess:
        terminal = spec.terminal
        wire = {
            "argv": list(spec.argv),
            "env": dict(spec.env),
            "user": _user(spec.user),
            "workdir": spec.workdir,
            "terminal": {"cols": terminal.cols, "rows": terminal.rows} if terminal else None,
        }
        result, fds = await self._on_sandbox(sandbox, "start", spec=wire)
        if "refused" in result:
            return RefusedProcess(str(result["refused"]), int(result["status"]))
        handle = int(result["process"])
        if result.get("kind") == "exec":
            return ExecStreamProcess(self._client, handle, terminal is not None)
        return runtime_process(self._client, handle, bool(result.get("tty")), fds)

    # SandboxNetwork and AgentSocketHost.

    def forwarding_problem(self) -> str | None:
        if self._client.lost is not None:
            return HELPER_GONE
        if self._hello is None:
            return "the gateway's privileged helper has not answered yet"
        problem = self._hello.get("forwarding_problem")
        return str(problem) if problem else None

    async def connect_tcp(self, sandbox: Sandbox, host: str, port: int) -> socket.socket:
        # Made in the sandbox by the broker, connected here: a peer that never answers
        # holds this front's socket, not one of the broker's requests.
        result, fds = await self._on_sandbox(sandbox, "tcp_sockets", host=host)
        candidates = []
        for fd, address in zip(fds, result.get("addresses") or [], strict=False):
            candidates.append((_socket([fd]), str(address)))
        for fd in fds[len(candidates) :]:
            os.close(fd)
        return await connect_first(candidates, host, port)

    async def connect_unix(self, sandbox: Sandbox, path: str, user: UserInfo) -> socket.socket:
        _, fds = await self._on_sandbox(sandbox, "connect_unix", path=path, user=_user(user))
        return _socket(fds)

    def _listener(self, result: dict[str, Any], fds: list[int]) -> BoundListener:
        handle = int(result["listener"])
        client = self._client
        return BoundListener(
            _socket(fds),
            lambda: client.send_only("unlisten", listener=handle),
            str(result.get("path") or ""),
            int(result.get("port") or 0),
        )

    async def listen_tcp(self, sandbox: Sandbox, host: str, port: int) -> BoundListener:
        return self._listener(*await self._on_sandbox(sandbox, "listen_tcp", host=host, port=port))

    async def listen_unix(self, sandbox: Sandbox, path: str, user: UserInfo) -> BoundListener:
        return self._listener(
            *await self._on_sandbox(sandbox, "listen_unix", path=path, user=_user(user))
        )

    async def listen_agent_socket(self, sandbox: Sandbox, user: UserInfo) -> BoundListener:
        return self._listener(*await self._on_sandbox(sandbox, "listen_agent", user=_user(user)))
