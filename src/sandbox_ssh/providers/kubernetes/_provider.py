"""Sandboxes as Kubernetes pods labelled with their session ID."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
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
from .. import _posix
from .._stdio import StdioNetwork
from ._client import ApiUnavailable, KubeClients, api_errors, open_clients
from ._portforward import connect_pod_port
from ._process import KubernetesProcess, PodTarget, run_short
from ._select import (
    can_be_label_value,
    choose_container,
    choose_pod,
    pod_id,
    pod_status,
    split_pod_id,
    waiting_reason,
)

log = logging.getLogger("sandbox_ssh.kubernetes")

DEFAULT_LABEL = "sandbox-ssh.session"
AUTHORIZED_KEYS_ANNOTATION = "sandbox-ssh.authorized-keys"
_LOOPBACK = ("127.0.0.1", "::1", "localhost")
_USER_CACHE_SECONDS = 60.0
_PENDING_POLL = 0.25


class KubernetesProvider:
    """Finds pods by label and runs processes in them through the exec subresource.

    ``namespace`` is one namespace or several; a sandbox's ID is
    ``NAMESPACE/POD``. Processes run in ``container``, else the container the
    pod's ``sandbox-ssh.container`` annotation names, else its first. Also a
    :class:`~sandbox_ssh.SandboxEnsurer` (waits for a Pending pod; it cannot
    create one), a :class:`~sandbox_ssh.UserInfoFetcher` (the container's own
    user, resolved inside it) and a :class:`~sandbox_ssh.SandboxNetwork`
    (TCP to the pod's loopback through ``portforward``; other addresses, unix
    sockets, remote forwards and the agent socket through a python3 helper in
    the container).
    """

    def __init__(
        self,
        namespace: str | Sequence[str] = "default",
        label: str = DEFAULT_LABEL,
        container: str | None = None,
        kubeconfig: str | None = None,
        *,
        context: str | None = None,
        hangup_grace: float = 2.0,
        answer_timeout: float = _posix.PID_LINE_TIMEOUT,
    ) -> None:
        namespaces = [namespace] if isinstance(namespace, str) else list(namespace)
        if not namespaces or not all(namespaces):
            raise ValueError("at least one namespace is needed")
        self.namespaces = tuple(dict.fromkeys(namespaces))
        self.label = label
        self._container = container
        self._kubeconfig = kubeconfig
        self._context = context
        self._hangup_grace = hangup_grace
        # Longest the sandbox may take to answer a start or a lookup (its root controls it).
        self._answer_timeout = answer_timeout
        self._clients: asyncio.Future[KubeClients] | None = None
        self._targets: dict[str, str] = {}  # sandbox ID -> container
        self._pod_uids: dict[str, str] = {}  # sandbox ID -> pod UID
        self._users: dict[str, tuple[float, UserInfo]] = {}  # pod UID -> user
        self._progress: dict[str, str] = {}  # session ID -> why its pod is not running yet
        self._tasks: set[asyncio.Task[None]] = set()
        self._network = StdioNetwork(self.start_process)

    async def clients(self) -> KubeClients:
        if self._clients is None:
            self._clients = asyncio.ensure_future(open_clients(self._kubeconfig, self._context))
        try:
            return await asyncio.shield(self._clients)
        except BaseException:
            if self._clients.done():
                self._clients = None  # try again next time (a kubeconfig may appear)
            raise

    async def prepare(self) -> None:
        """Load the configuration and check that pods can be listed in every namespace.

        A configuration that cannot be loaded, or an API server that refuses (RBAC),
        stops the start; one that does not answer yet is a warning, and sessions are
        refused until it does.
        """
        try:
            for namespace in self.namespaces:
                await self._list(namespace, limit=1)
        except ApiUnavailable as error:
            log.warning("%s; sessions are refused until it answers", error)
            return
        log.info(
            "kubernetes: serving pods labelled %s in %s", self.label, ", ".join(self.namespaces)
        )

    async def health(self) -> str | None:
        try:
            await self._list(self.namespaces[0], limit=1)
        except SandboxError as error:
            return str(error)
        return None

    async def close(self) -> None:
        await self._network.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._clients is not None and self._clients.done() and not self._clients.exception():
            await self._clients.result().close()
        self._clients = None

    async def _list(
        self, namespace: str, selector: str = "", limit: int | None = None
    ) -> list[Any]:
        clients = await self.clients()
        kwargs: dict[str, Any] = {"label_selector": selector} if selector else {}
        if limit is not None:
            kwargs["limit"] = limit
        with api_errors(f"cannot list pods in namespace {namespace}"):
            answer = await clients.core.list_namespaced_pod(namespace, **kwargs)
        return list(answer.items or ())

    # Finding

    async def find_sandbox(self, session_id: str) -> Sandbox | None:
        if not can_be_label_value(session_id):
            return None  # no pod can carry it: asking the API would only earn a 400
        selector = f"{self.label}={session_id}"
        listed = await asyncio.gather(*(self._list(ns, selector) for ns in self.namespaces))
        pod = choose_pod([pod for pods in listed for pod in pods], self.label, session_id)
        if pod is None:
            return None
        container = choose_container(pod, self._container)
        sandbox_id = pod_id(pod)
        self._targets[sandbox_id] = container
        self._pod_uids[sandbox_id] = str(pod.metadata.uid or sandbox_id)
        status = pod_status(pod, container)
        if status is SandboxStatus.STOPPED:
            self._progress[session_id] = waiting_reason(pod, container) or "Pending"
        else:
            self._progress.pop(session_id, None)
        return Sandbox(
            session_id=session_id,
            id=sandbox_id,
            status=status,
            name=str(pod.metadata.name),
            labels={**(pod.metadata.annotations or {}), **(pod.metadata.labels or {})},
        )

    async def _require(self, session_id: str) -> Sandbox:
        sandbox = await self.find_sandbox(session_id)
        if sandbox is None:
            raise SandboxError("no sandbox with this session ID")
        return sandbox

    async def _target(self, sandbox: Sandbox) -> PodTarget:
        namespace, pod = split_pod_id(sandbox.id)
        container = self._targets.get(sandbox.id)
        if container is None:
            await self._require(sandbox.session_id)
            container = self._targets.get(sandbox.id, "")
        return PodTarget(await self.clients(), namespace, pod, container)

    # SandboxEnsurer: a pod starts by itself; a Pending one is waited for.

    async def ensure_sandbox(self, session_id: str) -> None:
        while True:
            sandbox = await self._require(session_id)
            if sandbox.status is SandboxStatus.RUNNING:
                return
            if sandbox.status is SandboxStatus.UNAVAILABLE:
                raise SandboxError("the sandbox's pod has ended and nothing here restarts it")
            await asyncio.sleep(_PENDING_POLL)

    def start_progress(self, session_id: str) -> str | None:
        """Why the session's pod is not running yet (ContainerCreating, ...), for the banner."""
        return self._progress.get(session_id)

    # UserInfoFetcher: exec runs as the container's own user; resolved inside it.

    async def get_user_info(self, session_id: str) -> UserInfo:
        return await self._container_user(await self._require(session_id))

    async def _container_user(self, sandbox: Sandbox) -> UserInfo:
        target = await self._target(sandbox)
        key = self._pod_uids.get(sandbox.id, sandbox.id)
        cached = self._users.get(key)
        if cached is not None and time.monotonic() - cached[0] < _USER_CACHE_SECONDS:
            return cached[1]
        status, output = await run_short(target, _posix.WHOAMI_ARGV, self._answer_timeout)
        user = _posix.parse_whoami(output) if status.code == 0 else None
        if user is None:
            raise SandboxError(
                f"cannot resolve the user of the sandbox of session {sandbox.session_id}"
            )
        self._users[key] = (time.monotonic(), user)
        return user

    # SandboxProvider

    async def start_process(self, sandbox: Sandbox, spec: ProcessSpec) -> SandboxProcess:
        process = KubernetesProcess(
            await self._target(sandbox), self._hangup_grace, self._answer_timeout
        )
        try:
            await process.start(spec)
        except BaseException:
            await process.close()
            raise
        return process

    async def get_authorized_keys(self, sandbox: Sandbox) -> str:
        """authorized_keys lines from the pod's ``sandbox-ssh.authorized-keys`` annotation."""
        return str(sandbox.labels.get(AUTHORIZED_KEYS_ANNOTATION, ""))

    # SandboxNetwork and AgentSocketHost

    def forwarding_problem(self) -> str | None:
        return None

    async def connect_tcp(self, sandbox: Sandbox, host: str, port: int) -> socket.socket:
        if host.strip("[]").lower() in _LOOPBACK:
            target = await self._target(sandbox)
            return await connect_pod_port(
                target.clients, target.namespace, target.pod, port, self._tasks
            )
        user = await self._container_user(sandbox)
        return await self._network.connect(sandbox, user, "tcp", host, str(port))

    async def connect_unix(self, sandbox: Sandbox, path: str, user: UserInfo) -> socket.socket:
        return await self._network.connect_unix(sandbox, path, user)

    async def listen_tcp(self, sandbox: Sandbox, host: str, port: int) -> BoundListener:
        user = await self._container_user(sandbox)
        return await self._network.listen(sandbox, user, "tcp", host, str(port))

    async def listen_unix(self, sandbox: Sandbox, path: str, user: UserInfo) -> BoundListener:
        return await self._network.listen_unix(sandbox, path, user)

    async def listen_agent_socket(self, sandbox: Sandbox, user: UserInfo) -> BoundListener:
        return await self._network.listen_agent_socket(sandbox, user)
