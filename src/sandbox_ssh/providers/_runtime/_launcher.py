"""The gateway's side of the runtime shim: start processes, learn their exits, signal them.

The shim is started on first use and again if it dies. Every descriptor the
gateway holds is close-on-exec, and the shim is started with only its control
socket, so no gateway descriptor can reach the runtime or a sandbox.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import itertools
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...hooks import SandboxError
from ._binary import RuntimeBinary
from ._protocol import Message, receive, send

log = logging.getLogger("sandbox_ssh.runtime")

_SHIM = Path(__file__).with_name("_shim.py")
_STATE_ROOTS = ("/run/sandbox-ssh", "/var/run/sandbox-ssh")
# Bigger than the default 64 KiB, so a bulk writer in the sandbox is woken less often.
_PIPE_SIZE = 1 << 18
_F_SETPIPE_SZ = 1031
_SHIM_EXIT_WAIT = 10.0


class StartRefused(Exception):
    """The runtime ran but refused the process; ``str()`` is the runtime's reason."""


@dataclass(frozen=True)
class StartRequest:
    binary: RuntimeBinary
    root: str
    container_id: str
    sandbox_pid: int  # a host PID inside the sandbox, naming its PID namespace
    spec: dict[str, Any]
    tty: bool


@dataclass(frozen=True)
class ExitInfo:
    code: int | None
    signal: int | None
    core_dumped: bool = False


@dataclass
class Launched:
    """A started process and the gateway's ends of its stdio."""

    id: int
    pid: int
    exited: asyncio.Future[ExitInfo]
    stdin: int | None = None
    stdout: int | None = None
    stderr: int | None = None
    master: int | None = None  # the PTY master, for a terminal


@dataclass
class _Pending:
    started: asyncio.Future[Launched]
    ours: tuple[int, ...]  # our stdio ends, until started
    exited: asyncio.Future[ExitInfo] = field(default_factory=lambda: _future())


def _future() -> Any:
    return asyncio.get_running_loop().create_future()


def _state_root() -> str:
    for root in _STATE_ROOTS:
        with contextlib.suppress(OSError):
            os.makedirs(root, mode=0o700, exist_ok=True)
            return root
    return tempfile.gettempdir()


def _pipe() -> tuple[int, int]:
    read, write = os.pipe2(os.O_CLOEXEC)
    with contextlib.suppress(OSError):
        fcntl.fcntl(write, _F_SETPIPE_SZ, _PIPE_SIZE)
    return read, write


def _close_all(fds: tuple[int | None, ...]) -> None:
    for fd in fds:
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


class _Shim:
    """One running shim process and its control socket."""

    def __init__(self, grace: float) -> None:
        self.state_dir = tempfile.mkdtemp(prefix=f"shim-{os.getpid()}-", dir=_state_root())
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-E",
                    "-s",
                    str(_SHIM),
                    "--control-fd",
                    str(theirs.fileno()),
                    "--state-dir",
                    self.state_dir,
                    "--hangup-grace",
                    str(grace),
                ],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env={"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")},
                start_new_session=True,  # not in the terminal's group: Ctrl-C is the gateway's
            )
        finally:
            theirs.close()
        self.sock.setblocking(False)


class RuntimeLauncher:
    def __init__(self, hangup_grace: float = 2.0) -> None:
        self._grace = hangup_grace
        self._shim: _Shim | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._hangups: dict[int, asyncio.Future[None]] = {}
        self._outbox: collections.deque[tuple[Message, tuple[int, ...]]] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None

    # Starting.

    async def start(self, request: StartRequest) -> Launched:
        shim = self._ensure_shim()
        request_id = next(self._ids)
        base = os.path.join(shim.state_dir, str(request_id))
        spec_file = base + ".json"
        descriptor = os.open(spec_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(descriptor, "w") as out:
            json.dump(request.spec, out)
        argv = [
            request.binary.path,
            "--root",
            request.root,
            "--log",
            base + ".log",
            "--log-format",
            "json",
            "exec",
            "--detach",
            "--pid-file",
            base + ".pid",
            "--process",
            spec_file,
        ]
        message: Message = {
            "op": "start",
            "id": request_id,
            "sandbox_pid": request.sandbox_pid,
            "pid_file": base + ".pid",
            "log_file": base + ".log",
            "files": [spec_file],
        }
        theirs: tuple[int, ...] = ()
        ours: tuple[int, ...] = ()
        if request.tty:
            argv += ["--tty", "--console-socket", base + ".sock"]
            message["console"] = base + ".sock"
        else:
            stdin_read, stdin_write = _pipe()
            stdout_read, stdout_write = _pipe()
            stderr_read, stderr_write = _pipe()
            theirs = (stdin_read, stdout_write, stderr_write)
            ours = (stdin_write, stdout_read, stderr_read)
        message["argv"] = [*argv, request.container_id]
        pending = _Pending(started=_future(), ours=ours)
        self._pending[request_id] = pending
        self._send(message, theirs)
        try:
            return await asyncio.shield(pending.started)
        except asyncio.CancelledError:
            # The start goes on in the shim; hang the process up as soon as it exists.
            pending.started.add_done_callback(lambda _: self._abandon(request_id))
            raise

    def _abandon(self, request_id: int) -> None:
        pending = self._pending.get(request_id)
        if pending is None or pending.started.cancelled() or pending.started.exception():
            return
        launched = pending.started.result()
        _close_all((launched.stdin, launched.stdout, launched.stderr, launched.master))
        self._send({"op": "hangup", "id": request_id, "grace": self._grace})

    # Control of a started process.

    def signal(self, request_id: int, signum: int) -> None:
        self._send({"op": "signal", "id": request_id, "signal": signum})

    async def hangup(self, request_id: int) -> None:
        """Hang up whatever holds the process's stdio; returns when the grace is over."""
        if self._shim is None:
            return
        done = self._hangups.get(request_id)
        if done is None:
            done = self._hangups[request_id] = _future()
            self._send({"op": "hangup", "id": request_id, "grace": self._grace})
        await asyncio.shield(done)

    def release(self, request_id: int) -> None:
        """The gateway is done with it; the shim forgets it once it exited."""
        self._send({"op": "release", "id": request_id})

    # The shim.

    def _ensure_shim(self) -> _Shim:
        if self._shim is None:
            self._loop = asyncio.get_running_loop()
            try:
                self._shim = _Shim(self._grace)
            except OSError as error:
                raise SandboxError(f"cannot start the runtime shim: {error}") from error
            self._loop.add_reader(self._shim.sock.fileno(), self._on_readable)
        return self._shim

    def _send(self, message: Message, fds: tuple[int, ...] = ()) -> None:
        self._outbox.append((message, fds))
        self._flush()

    def _flush(self) -> None:
        shim = self._shim
        while self._outbox:
            message, fds = self._outbox[0]
            if shim is None:
                _close_all(fds)
                self._outbox.popleft()
                continue
            try:
                send(shim.sock, message, fds)
            except BlockingIOError:
                assert self._loop is not None
                self._loop.add_writer(shim.sock.fileno(), self._on_writable)
                return
            except OSError:
                _close_all(fds)
                self._outbox.popleft()
                continue
            _close_all(fds)  # theirs now; the runtime got them through the shim
            self._outbox.popleft()

    def _on_writable(self) -> None:
        if self._shim is not None and self._loop is not None:
            self._loop.remove_writer(self._shim.sock.fileno())
        self._flush()

    def _on_readable(self) -> None:
        shim = self._shim
        while shim is not None:
            try:
                received = receive(shim.sock)
            except BlockingIOError:
                return
            except OSError:
                received = None
            if received is None:
                self._shim_lost(shim)
                return
            message, fds = received
            self._on_message(message, fds)

    def _on_message(self, message: Message, fds: list[int]) -> None:
        request_id = int(message.get("id", 0))
        pending = self._pending.get(request_id)
        op = message.get("op")
        if op == "started" and pending is not None and not pending.started.done():
            stdin, stdout, stderr = pending.ours if pending.ours else (None, None, None)
            master = fds.pop(0) if fds else None
            pending.started.set_result(
                Launched(
                    request_id, int(message["pid"]), pending.exited, stdin, stdout, stderr, master
                )
            )
        elif op == "failed" and pending is not None and not pending.started.done():
            _close_all(pending.ours)
            del self._pending[request_id]
            pending.started.set_exception(StartRefused(str(message.get("error", ""))))
        elif op == "exited" and pending is not None:
            del self._pending[request_id]
            if not pending.exited.done():
                pending.exited.set_result(
                    ExitInfo(message.get("code"), message.get("signal"), bool(message.get("core")))
                )
        elif op == "hungup":
            done = self._hangups.pop(request_id, None)
            if done is not None and not done.done():
                done.set_result(None)
        _close_all(tuple(fds))

    def _shim_lost(self, shim: _Shim) -> asyncio.Future[None]:
        assert self._loop is not None
        self._loop.remove_reader(shim.sock.fileno())
        with contextlib.suppress(Exception):
            self._loop.remove_writer(shim.sock.fileno())
        shim.sock.close()
        self._shim = None
        if self._pending:
            log.warning(
                "the runtime shim exited; %d process(es) lose their status", len(self._pending)
            )
        lost = SandboxError("the runtime shim exited")
        for pending in self._pending.values():
            if not pending.started.done():
                _close_all(pending.ours)
                pending.started.set_exception(lost)
            if not pending.exited.done():
                pending.exited.set_exception(lost)
                pending.exited.exception()  # nobody may wait for it
        self._pending.clear()
        for done in self._hangups.values():
            if not done.done():
                done.set_result(None)
        self._hangups.clear()
        return asyncio.ensure_future(asyncio.to_thread(_reap, shim))

    async def close(self) -> None:
        """Stop the shim; it hangs up what still runs, then exits."""
        shim = self._shim
        if shim is not None:
            await self._shim_lost(shim)


def _reap(shim: _Shim) -> None:
    try:
        shim.process.wait(_SHIM_EXIT_WAIT)
    except subprocess.TimeoutExpired:
        log.warning("the runtime shim did not exit; killing it")
        shim.process.kill()
        shim.process.wait()
