"""The broker's side of each front: requests answered, handles kept, bounds enforced.

Each front has one connection (a socketpair end the broker was started with). Its
requests name sandboxes by session ID, and then by the handles issued here in
answer; a handle is a key of that front's own tables, so no front can reach what
another asked for. Processes and sockets are made by the Docker provider, running in
this process; their descriptors are sent to the front once and closed here, so no
session's bytes pass through the broker. When a front's connection ends, its
processes are hung up and its sockets in sandboxes removed, as when sshd's
connection drops.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import itertools
import logging
import os
import signal as signals
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..hooks import BoundListener, ProcessSpec, Sandbox, SandboxError, TerminalSize, UserInfo
from ..providers._runtime._process import RefusedProcess
from ..providers.docker import DockerProvider
from ..providers.docker._launch import ExecLaunch, RuntimeLaunch
from . import protocol
from .protocol import BadRequest, Message

log = logging.getLogger("sandbox_ssh.broker")

# Per front: what it may hold at once, and how many requests it may have in flight.
MAX_SANDBOXES = 4096
MAX_PROCESSES = 16384
MAX_LISTENERS = 8192
MAX_IN_FLIGHT = 1024
# Of those, for one sandbox (or session ID): a tenant whose sandbox makes its requests slow
# (a /bin/sh that never answers the user lookup) holds its own share and no one else's.
MAX_IN_FLIGHT_PER_SANDBOX = 32
# How long a request may take (a start: the provider's own bound, plus this).
REQUEST_TIMEOUT = 60.0
# Requests that last as long as their process: bounded by the process count instead.
_PER_PROCESS = frozenset({"wait", "login", "hangup"})


class Refusal(Exception):
    """A request refused without the provider: ``kind`` for the front, message for the user."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class _Process:
    launch: RuntimeLaunch | ExecLaunch
    stream_sent: bool = False

    def close(self) -> None:
        """Close what this process still holds here (an exec stream never handed on)."""
        if isinstance(self.launch, ExecLaunch):
            attached = self.launch.attached
            if not attached.done():
                attached.cancel()
            elif not (attached.cancelled() or attached.exception() or self.stream_sent):
                attached.result().sock.close()


@dataclass
class _Front:
    """One front's connection and everything it holds."""

    name: str
    sock: socket.socket
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    sandboxes: collections.OrderedDict[int, Sandbox] = field(
        default_factory=collections.OrderedDict
    )
    by_container: dict[str, int] = field(default_factory=dict)
    processes: dict[int, _Process] = field(default_factory=dict)
    listeners: dict[int, BoundListener] = field(default_factory=dict)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    in_flight: int = 0
    in_flight_by: collections.Counter[str] = field(default_factory=collections.Counter)
    outbox: collections.deque[tuple[Message, list[int]]] = field(default_factory=collections.deque)
    gone: bool = False

    def sandbox(self, handle: int) -> Sandbox:
        found = self.sandboxes.get(handle)
        if found is None:
            raise Refusal("no such sandbox handle (find the session again)", "stale_handle")
        self.sandboxes.move_to_end(handle)
        return found

    def process(self, handle: int) -> _Process:
        found = self.processes.get(handle)
        if found is None:
            raise Refusal("no such process handle", "bad_request")
        return found


def _user(value: dict[str, Any]) -> UserInfo:
    return UserInfo(username=value["username"], uid=value["uid"], gid=value["gid"])


def _spec(value: dict[str, Any]) -> ProcessSpec:
    terminal = value["terminal"]
    return ProcessSpec(
        argv=list(value["argv"]),
        env=dict(value["env"]),
        user=_user(value["user"]),
        workdir=value["workdir"],
        terminal=TerminalSize(cols=terminal["cols"], rows=terminal["rows"]) if terminal else None,
    )


def _chunks(chunks: list[tuple[Any, bytes]]) -> list[list[Any]]:
    return [[stream.value, base64.b64encode(data).decode()] for stream, data in chunks]


Reply = tuple[dict[str, Any], list[int]]


class Broker:
    """Serves its fronts with one Docker provider, until every front has gone."""

    def __init__(self, provider: DockerProvider, start_timeout: float) -> None:
        self.provider = provider
        self._start_timeout = start_timeout
        self._fronts: list[_Front] = []
        self._tasks: set[asyncio.Future[None]] = set()
        self._all_gone = asyncio.Event()
        self._handlers: dict[str, Callable[[_Front, dict[str, Any]], Awaitable[Reply]]] = {
            "hello": self._hello,
            "health": self._health,
            "find": self._find,
            "ensure": self._ensure,
            "stop": self._stop,
            "user": self._user,
            "start": self._start,
            "login": self._login,
            "wait": self._wait,
            "signal": self._signal,
            "resize": self._resize,
            "hangup": self._hangup,
            "release": self._release,
            "tcp_sockets": self._tcp_sockets,
            "connect_unix": self._connect_unix,
            "listen_tcp": self._listen_tcp,
            "listen_unix": self._listen_unix,
            "listen_agent": self._listen_agent,
            "unlisten": self._unlisten,
        }
        assert set(self._handlers) == set(protocol.REQUESTS)

    # Fronts.

    def serve(self, sock: socket.socket, name: str) -> None:
        sock.setblocking(False)
        front = _Front(name, sock)
        self._fronts.append(front)
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable, front)

    async def until_all_gone(self) -> None:
        """Return once every front's connection has ended and its hang-ups are done."""
        if self._fronts:
            await self._all_gone.wait()
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    def _readable(self, front: _Front) -> None:
        while not front.gone:
            try:
                received = protocol.receive(front.sock)
            except BlockingIOError:
                return
            except BadRequest as error:
                log.warning("front %s: unreadable request refused: %s", front.name, error)
                continue
            except OSError as error:
                self._front_lost(front, str(error))
                return
            if received is None:
                self._front_lost(front, "its connection closed")
                return
            message, fds = received
            for fd in fds:  # a front sends no descriptors
                os.close(fd)
            self._dispatch(front, message)

    def _dispatch(self, front: _Front, message: Any) -> None:
        request_id = message.get("id") if isinstance(message, dict) else None
        try:
            request_id, op, arguments = protocol.checked(message)
        except BadRequest as error:
            log.warning("front %s: request refused: %s", front.name, error)
            if isinstance(request_id, int) and not isinstance(request_id, bool):
                self._reply(front, {"id": request_id, "error": str(error), "kind": "bad_request"})
            return
        bounded = op not in _PER_PROCESS
        share = self._share(front, arguments) if bounded else None
        refusal = None
        if bounded and front.in_flight >= MAX_IN_FLIGHT:
            refusal = f"more than {MAX_IN_FLIGHT} requests at once"
        elif share is not None and front.in_flight_by[share] >= MAX_IN_FLIGHT_PER_SANDBOX:
            refusal = f"more than {MAX_IN_FLIGHT_PER_SANDBOX} requests at once for this sandbox"
        if refusal is not None:
            self._reply(front, {"id": request_id, "error": refusal, "kind": "limit"})
            return
        front.in_flight += bounded
        if share is not None:
            front.in_flight_by[share] += 1
        task = asyncio.ensure_future(self._answer(front, request_id, op, arguments))
        front.tasks.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            front.tasks.discard(finished)
            front.in_flight -= bounded
            if share is not None:
                front.in_flight_by[share] -= 1
                if not front.in_flight_by[share]:
                    del front.in_flight_by[share]

        task.add_done_callback(done)

    @staticmethod
    def _share(front: _Front, arguments: dict[str, Any]) -> str | None:
        """Whose share a request counts against: its sandbox's, or its session ID's."""
        if "session_id" in arguments:
            return f"session:{arguments['session_id']}"
        handle = arguments.get("sandbox")
        if handle is None:
            return None
        sandbox = front.sandboxes.get(handle)
        return f"sandbox:{sandbox.session_id if sandbox else handle}"

    async def _answer(
        self, front: _Front, request_id: int, op: str, arguments: dict[str, Any]
    ) -> None:
        fds: list[int] = []
        try:
            if op in _PER_PROCESS:
                result, fds = await self._handlers[op](front, arguments)
            else:
                limit = REQUEST_TIMEOUT + (self._start_timeout if op == "start" else 0)
                async with asyncio.timeout(limit):
                    result, fds = await self._handlers[op](front, arguments)
            reply: Message = {"id": request_id, "result": result}
        except Refusal as refusal:
            reply = {"id": request_id, "error": str(refusal), "kind": refusal.kind}
        except SandboxError as error:
            reply = {"id": request_id, "error": str(error), "kind": "sandbox"}
        except TimeoutError:
            reply = {"id": request_id, "error": f"{op} took too long", "kind": "timeout"}
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.exception("front %s: %s failed", front.name, op)
            reply = {"id": request_id, "error": f"{op} failed: {error!r}"[:300], "kind": "internal"}
        self._reply(front, reply, fds)

    def _reply(self, front: _Front, message: Message, fds: list[int] | None = None) -> None:
        if front.gone:
            for fd in fds or []:
                os.close(fd)
            return
        front.outbox.append((message, fds or []))
        self._flush(front)

    def _flush(self, front: _Front) -> None:
        loop = asyncio.get_running_loop()
        while front.outbox and not front.gone:
            message, fds = front.outbox[0]
            try:
                protocol.send(front.sock, message, fds)
            except BlockingIOError:
                loop.add_writer(front.sock.fileno(), self._writable, front)
                return
            except OSError as error:
                self._front_lost(front, str(error))
                return
            front.outbox.popleft()
            for fd in fds:
                os.close(fd)  # the front's now

    def _writable(self, front: _Front) -> None:
        asyncio.get_running_loop().remove_writer(front.sock.fileno())
        self._flush(front)

    def _front_lost(self, front: _Front, why: str) -> None:
        """Hang up what the front started, remove what it bound; once, with the reason."""
        if front.gone:
            return
        front.gone = True
        loop = asyncio.get_running_loop()
        loop.remove_reader(front.sock.fileno())
        with contextlib.suppress(Exception):
            loop.remove_writer(front.sock.fileno())
        front.sock.close()
        for _, fds in front.outbox:
            for fd in fds:
                os.close(fd)
        front.outbox.clear()
        for task in list(front.tasks):
            task.cancel()
        live = len(front.processes)
        log.warning("front %s gone (%s): hanging up its %d process(es)", front.name, why, live)
        for handle, process in list(front.processes.items()):
            self._hang_up_for_lost_front(process)
            del front.processes[handle]
        for listener in front.listeners.values():
            with contextlib.suppress(Exception):
                listener.cleanup()
        front.listeners.clear()
        front.sandboxes.clear()
        if all(other.gone for other in self._fronts):
            self._all_gone.set()

    def _hang_up_for_lost_front(self, process: _Process) -> None:
        launch = process.launch
        if isinstance(launch, RuntimeLaunch):
            self._background(launch.launcher.hangup(launch.launched.id))
            return
        process.close()
        self._background(launch.control.hangup())

    def _background(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # The requests.

    async def _hello(self, front: _Front, _: dict[str, Any]) -> Reply:
        await self.provider.prepare()
        return {
            "exec_path": self.provider.exec_path,
            "forwarding_problem": self.provider.forwarding_problem(),
            "label": self.provider.label,
        }, []

    async def _health(self, front: _Front, _: dict[str, Any]) -> Reply:
        return {"problem": await self.provider.health()}, []

    async def _find(self, front: _Front, arguments: dict[str, Any]) -> Reply:
        sandbox = await self.provider.find_sandbox(arguments["session_id"])
        if sandbox is None:
            return {"sandbox": None}, []
        handle = front.by_container.get(sandbox.id)
        if handle is None or handle not in front.sandboxes:
            handle = next(front.ids)
            front.by_container[sandbox.id] = handle
        front.sandboxes[handle] = sandbox
        front.sandboxes.move_to_end(handle)
        while len(front.sandboxes) > MAX_SANDBOXES:
            _, evicted = front.sandboxes.popitem(last=False)
            front.by_container.pop(evicted.id, None)
        found = {
            "handle": handle,
            "id": sandbox.id,
            "status": sandbox.status.value,
            "name": sandbox.name,
            "labels": dict(sandbox.labels),
        }
        return {"sandbox": found}, []

    async def _ensure(self, front: _Front, arguments: dict[str, Any]) -> Reply:
        await self.provider.ensure_sandbox(arguments["session_id"])
        return {}, []

    async def _stop(self, front: _Front, arguments: dict[str, Any]) -> Reply:
        await self.provider.stop_sandbox(arguments["session_id"])
        return {}, []

    async def _user(self, front: _Front, arguments: dict[str, Any]) -> Reply:
        found = await self.provider.get_user_info(arguments["session_id"])
        return {"username": found.username, "uid": found.uid, "gid": found.gid}, []

    async def _start(self, front: _Front, arguments: dict[str, Any]) -> Reply:
        if len(front.processes) >= MAX_PROCESSES:
            raise Refusal(f"more than {MAX_PROCESSES} processes at once", "limit")
        sandbox = front.sandbox(arguments["sandbox"])
        spec = _spec(arguments["spec"])
        launched = await self.provider.launch(sandbox, spec)
        if isinstance(launched, RefusedProcess):
            return {"refused": launched.message, "status": launched.status}, []
        handle = next(front.ids)
        front.processes[handle] = _Process(launched)
        if isinstance(launched, ExecLaunch):
            return {"process": handle, "kind": "exec"}, []
        started = launched.launched
        if started.master is not None:
            return {"process": handle, "kind": "runtime", "tty": True}, [started.master]
        assert started.stdin is not None and started.stdout is not None
        assert started.stderr is not None
        return {"process": handle, "kind": "runtime", "tty": False}, [
            started.stdin,
            started.stdout,
            started.stderr,
        ]

    async def _login(self, front: _Front, arguments: dict[str, Any]) -> Reply:
        process = front.process(arguments["process"])
        launch = process.launch
        if not isinstance(launch, ExecLaunch) or process.stream_sent:
            raise Refusal("login is for a process of the exec API, once", "bad_request")
        attached = await asyncio.shield(launch.attached)
        process.stream_sent = True
        return {
            "pid": attached.pid is not None,
            "early": _chunks(attached.early),
            "remainder": base64.b64encode(attached.remainder).decode(),
        }, [attached.sock.detach()]

    async def _wait(self, front: _Front, arguments: dict[str, Any]) -> Reply:
        launch = front.process(arguments["process"]).launch
        if isinstance(launch, ExecLaunch):
            return {"code": await launch.control.wait(), "signal": None, "core": False}, []
        info = await asyncio.shield(launch.launched.exited)
        return {"code": info.code, "signal": info.signal, "core": info.core_dumped}, []

    async def _signal(self, front: _Front, arguments: dict[str, Any]) -> Reply:
        launch = front.process(arguments["process"]).launch
        name = arguments["signal"]
        if isinstance(launch, ExecLaunch):
            try:
                await launch.control.signal(name)
            except ValueError as error:
                raise Refusal(str(error), "bad_request") from None
            return {}, []
        try:
            number = signals.Signals["SIG" + name].value
        except KeyError:
            raise Refusal(f"unknown signal {name!r}", "bad_request") from None
        launch.launcher.signal(launch.launched.id, number)
        return {}, []

    async def _resize(self, front: _Front, arguments: dict[str, Any]) -> Reply:
        launch = front.process(arguments["process"]).launch
        if isinstance(launch, ExecLaunch):
            await launch.control.resize(TerminalSize(arguments["cols"], arguments["rows"]))
        return {}, []  # a runtime path's terminal: the front resizes the master it holds

    async def _hangup(self, front: _Front, arguments: dict[str, Any]) -> Reply:
        """Hang up what holds the session (after the grace), and forget the process: the
        front's last word about it, as a hang-up is the shim's."""
        handle = arguments["process"]
        process = front.process(handle)
        launch = process.launch
        if isinstance(launch, ExecLaunch):
            if not launch.attached.done():  # the PID the hang-up needs comes with the login
                await asyncio.wait([launch.attached])
            await launch.control.hangup()
        else:
            await launch.launcher.hangup(launch.launched.id)
        if front.processes.pop(handle, None) is not None:
            process.close()
        return {}, []

    async def _release(self, front: _Front, arguments: dict[str, Any]) -> Reply:
        process = front.processes.pop(arguments["process"], None)
        if process is None:
            raise Refusal("no such process handle", "bad_request")
        process.close()
        if isinstance(process.launch, RuntimeLaunch):
            process.launch.launcher.release(process.launch.launched.id)
        return {}, []

    async def _tcp_sockets(self, front: _Front, arguments: dict[str, Any]) -> Reply:
        sandbox = front.sandbox(arguments["sandbox"])
        made = await self.provider.tcp_sockets(sandbox, arguments["host"])
        return {"addresses": [address for _, address in made]}, [sock.detach() for sock, _ in made]

    async def _connect_unix(self, front: _Front, arguments: dict[str, Any]) -> Reply:
        sandbox = front.sandbox(arguments["sandbox"])
        user = _user(arguments["user"])
        sock = await self.provider.connect_unix(sandbox, arguments["path"], user)
        return {}, [sock.detach()]

    def _keep(self, front: _Front, listener: BoundListener) -> Reply:
        if len(front.listeners) >= MAX_LISTENERS:
            with contextlib.suppress(Exception):
                listener.cleanup()
            listener.sock.close()
            raise Refusal(f"more than {MAX_LISTENERS} listeners at once", "limit")
        handle = next(front.ids)
        front.listeners[handle] = listener
        result = {"listener": handle, "path": listener.path, "port": listener.port}
        return result, [listener.sock.detach()]

    async def _listen_tcp(self, front: _Front, arguments: dict[str, Any]) -> Reply:
        sandbox = front.sandbox(arguments["sandbox"])
        listener = await self.provider.listen_tcp(sandbox, arguments["host"], arguments["port"])
        return self._keep(front, listener)

    async def _listen_unix(self, front: _Front, arguments: dict[str, Any]) -> Reply:
        sandbox = front.sandbox(arguments["sandbox"])
        user = _user(arguments["user"])
        listener = await self.provider.listen_unix(sandbox, arguments["path"], user)
        return self._keep(front, listener)

    async def _listen_agent(self, front: _Front, arguments: dict[str, Any]) -> Reply:
        sandbox = front.sandbox(arguments["sandbox"])
        listener = await self.provider.listen_agent_socket(sandbox, _user(arguments["user"]))
        return self._keep(front, listener)

    async def _unlisten(self, front: _Front, arguments: dict[str, Any]) -> Reply:
        listener = front.listeners.pop(arguments["listener"], None)
        if listener is None:
            raise Refusal("no such listener handle", "bad_request")
        await asyncio.to_thread(listener.cleanup)
        return {}, []
