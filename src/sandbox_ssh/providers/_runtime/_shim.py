"""The runtime shim: the child subreaper between the gateway and the processes it starts.

Run by the gateway, one per provider, as a lean Python process that imports
only this file and its two siblings (see ``_launcher``). A runtime started
with ``exec -d`` exits as soon as its process runs, and the process is then re-parented to the
nearest child subreaper among its ancestors: this shim. That makes the shim
the only one who can reap it, so

* every exit status, and whether a signal caused it, comes from waitid();
* a PID stays valid until the shim itself reaps it, in the same thread that
  signals it, so signalling by PID cannot hit a reused PID;
* no zombie ever lands in the gateway, and the gateway process is not made a
  subreaper (which would change what happens to its own orphans).

It also hangs sessions up: every process of the sandbox that still holds the
session's stdio or terminal gets SIGHUP, and SIGKILL after a grace unless it
ignores SIGHUP. When the gateway dies, the control socket reaches EOF and the
shim hangs up every session it knows before exiting.

Keep this module free of the rest of the package: it runs in its own process.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import heapq
import itertools
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import termios
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

if __package__:
    from ._holders import Identity, find_holders, identity_of_fd, pid_namespace
    from ._protocol import Message, receive, receive_raw, send
else:
    # Started by file with only this folder on sys.path, so that the shim does not
    # import the gateway (asyncssh, aiohttp...) it has no use for.
    from _holders import (  # type: ignore[import-not-found,no-redef]
        Identity,
        find_holders,
        identity_of_fd,
        pid_namespace,
    )
    from _protocol import (  # type: ignore[import-not-found,no-redef]
        Message,
        receive,
        receive_raw,
        send,
    )

_PR_SET_CHILD_SUBREAPER = 36
_TIOCGPTPEER = getattr(termios, "TIOCGPTPEER", 0x5441)
_HANGUP_POLL = 0.1
_RUNTIME_TIMEOUT = 60.0
_UNCLAIMED_KEEP = 300.0
_CHILD_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}


@dataclass
class Launch:
    """A runtime invocation that has not exited yet."""

    id: int
    namespace: str
    targets: set[Identity]
    files: list[str]
    pid_file: str
    log_file: str
    console: socket.socket | None
    # Kept until reaped here, with its returncode then set, so that subprocess never
    # waits for this PID itself (it could by then belong to another child).
    runtime: subprocess.Popen[bytes]


@dataclass
class Tracked:
    """A process the runtime started, until it exited and the gateway let go of it."""

    id: int
    pid: int
    namespace: str
    targets: frozenset[Identity]
    # A copy of the terminal's master, held until the hang-up is done: closing the last
    # master frees the pty's index, and a new terminal with that index has the same
    # (device, inode), so a scan after that would find another session's processes.
    terminal: int | None = None
    exited: bool = False
    released: bool = False
    hanging_up: bool = False


@dataclass(order=True)
class _Timer:
    when: float
    sequence: int
    action: Callable[[], None] = field(compare=False)


def _set_child_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"PR_SET_CHILD_SUBREAPER: {os.strerror(error)}")


def _exit_fields(info: os.waitid_result) -> dict[str, Any]:
    if info.si_code == os.CLD_EXITED:
        return {"code": info.si_status, "signal": None, "core": False}
    return {"code": None, "signal": info.si_status, "core": info.si_code == os.CLD_DUMPED}


def _runtime_error(log_file: str) -> str:
    """The runtime's last error line from its JSON log."""
    message = ""
    with contextlib.suppress(OSError), open(log_file, errors="replace") as log:
        for line in log:
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict) and entry.get("level") in ("error", "fatal"):
                    message = str(entry.get("msg", ""))
    return message


class Shim:
    def __init__(self, control: socket.socket, state_dir: str | None, grace: float) -> None:
        self.control = control
        self.state_dir = state_dir
        self.grace = grace
        self.selector = selectors.DefaultSelector()
        self.wakeup_read, wakeup_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.wakeup_write = wakeup_write
        self.devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        self.launches: dict[int, Launch] = {}  # by the runtime's PID
        self.tracked: dict[int, Tracked] = {}  # by request ID
        self.by_pid: dict[int, Tracked] = {}
        self.unclaimed: dict[int, tuple[os.waitid_result, float]] = {}
        self.timers: list[_Timer] = []
        self.sequence = itertools.count()
        self.outbox: deque[tuple[Message, list[int]]] = deque()
        self.hangups = 0
        self.gateway_gone = False

    # The loop.

    def run(self) -> None:
        _set_child_subreaper()
        signal.set_wakeup_fd(self.wakeup_write)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        # The gateway decides when the shim stops. A handler, not SIG_IGN: an ignored
        # signal would stay ignored in every process started from here.
        signal.signal(signal.SIGINT, lambda signum, frame: None)
        self.control.setblocking(False)
        self.selector.register(self.wakeup_read, selectors.EVENT_READ, self._on_wakeup)
        self.selector.register(self.control, selectors.EVENT_READ, self._on_control)
        while not (self.gateway_gone and not self.launches and not self.hangups):
            timeout = None
            if self.timers:
                timeout = max(0.0, self.timers[0].when - time.monotonic())
            for key, events in self.selector.select(timeout):
                key.data(events)
            self._reap()
            self._run_timers()
        self._cleanup()

    def _on_wakeup(self, events: int) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self.wakeup_read, 4096):
                pass

    def _on_control(self, events: int) -> None:
        if events & selectors.EVENT_WRITE:
            self._flush()
        if not events & selectors.EVENT_READ:
            return
        while True:
            try:
                received = receive(self.control)
            except BlockingIOError:
                return
            except OSError:
                received = None
            if received is None:
                self._gateway_lost()
                return
            message, fds = received
            try:
                self._dispatch(message, fds)
            finally:
                for fd in fds:
                    with contextlib.suppress(OSError):
                        os.close(fd)

    def _dispatch(self, message: Message, fds: list[int]) -> None:
        op = message.get("op")
        if op == "start":
            self._start(message, fds)
        elif op == "signal":
            self._signal(int(message["id"]), int(message["signal"]))
        elif op == "hangup":
            self._hangup_request(int(message["id"]), float(message.get("grace", self.grace)))
        elif op == "release":
            self._release(int(message["id"]))

    def _reply(self, message: Message, fds: list[int] | None = None) -> None:
        if self.gateway_gone:
            for fd in fds or []:
                os.close(fd)
            return
        self.outbox.append((message, fds or []))
        self._flush()

    def _flush(self) -> None:
        while self.outbox:
            message, fds = self.outbox[0]
            try:
                send(self.control, message, fds)
            except BlockingIOError:
                self.selector.modify(
                    self.control, selectors.EVENT_READ | selectors.EVENT_WRITE, self._on_control
                )
                return
            except OSError:
                self.outbox.clear()  # the gateway is gone; EOF will follow
                return
            self.outbox.popleft()
            for fd in fds:
                os.close(fd)
        if not self.gateway_gone:
            self.selector.modify(self.control, selectors.EVENT_READ, self._on_control)

    def _at(self, delay: float, action: Callable[[], None]) -> None:
        heapq.heappush(self.timers, _Timer(time.monotonic() + delay, next(self.sequence), action))

    def _run_timers(self) -> None:
        now = time.monotonic()
        while self.timers and self.timers[0].when <= now:
            heapq.heappop(self.timers).action()

    # Starting.

    def _start(self, message: Message, fds: list[int]) -> None:
        request_id = int(message["id"])
        namespace = pid_namespace(int(message["sandbox_pid"]))
        if namespace is None:
            self._reply({"op": "failed", "id": request_id, "error": "the sandbox is not running"})
            return
        console: socket.socket | None = None
        if message.get("console"):
            console = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            console.bind(message["console"])
            console.listen(1)
            stdio = [self.devnull] * 3
            targets: set[Identity] = set()
        else:
            stdio = fds[:3]
            targets = {identity_of_fd(fd) for fd in stdio}
        argv = [str(arg) for arg in message["argv"]]
        try:
            # Not posix_spawn: glibc's leaves its internal signals (32, 33) ignored in the
            # child, and ignored signals survive exec into the sandbox. subprocess restores
            # SIGPIPE and SIGXFSZ, which Python ignores, and closes every other descriptor.
            runtime = subprocess.Popen(
                argv,
                stdin=stdio[0],
                stdout=stdio[1],
                stderr=stdio[2],
                env=_CHILD_ENV,
                close_fds=True,
                restore_signals=True,
            )
        except OSError as error:
            if console is not None:
                console.close()
            self._reply({"op": "failed", "id": request_id, "error": f"{argv[0]}: {error}"})
            return
        launch = Launch(
            id=request_id,
            namespace=namespace,
            targets=targets,
            files=[str(f) for f in message.get("files", [])],
            pid_file=str(message["pid_file"]),
            log_file=str(message["log_file"]),
            console=console,
            runtime=runtime,
        )
        self.launches[runtime.pid] = launch
        self._at(_RUNTIME_TIMEOUT, lambda: self._runtime_overdue(runtime.pid, launch))

    def _runtime_overdue(self, pid: int, launch: Launch) -> None:
        if self.launches.get(pid) is launch:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # reaped below, and reported as a failure

    def _runtime_exited(self, launch: Launch, info: os.waitid_result) -> None:
        master: int | None = None
        try:
            if info.si_code != os.CLD_EXITED or info.si_status != 0:
                error = _runtime_error(launch.log_file) or (
                    "the runtime was killed"
                    if info.si_code != os.CLD_EXITED
                    else f"the runtime exited with status {info.si_status}"
                )
                self._reply({"op": "failed", "id": launch.id, "error": error})
                return
            with open(launch.pid_file) as pid_file:
                pid = int(pid_file.read().strip())
            if launch.console is not None:
                master = self._receive_master(launch.console)
                launch.targets.add(self._terminal_identity(master))
        except (OSError, ValueError) as error:
            self._reply({"op": "failed", "id": launch.id, "error": f"runtime hand-over: {error}"})
            if master is not None:
                os.close(master)
            return
        finally:
            if launch.console is not None:
                launch.console.close()
            for path in (launch.pid_file, launch.log_file, *launch.files):
                with contextlib.suppress(OSError):
                    os.unlink(path)
        record = Tracked(
            launch.id,
            pid,
            launch.namespace,
            frozenset(launch.targets),
            terminal=os.dup(master) if master is not None else None,
        )
        self.tracked[record.id] = record
        self._reply({"op": "started", "id": record.id, "pid": pid}, [master] if master else [])
        early = self.unclaimed.pop(pid, None)
        if early is not None:
            self._process_exited(record, early[0])
        else:
            self.by_pid[pid] = record
        if self.gateway_gone:
            self._hang_up(record, self.grace, reply=False)

    def _receive_master(self, console: socket.socket) -> int:
        console.settimeout(5)
        connection, _ = console.accept()
        with connection:
            connection.settimeout(5)
            _, fds = receive_raw(connection)  # the bytes name the device: "/dev/ptmx"
        if not fds:
            raise OSError("the runtime sent no terminal")
        master, *extra = fds
        for fd in extra:
            os.close(fd)
        return master

    def _terminal_identity(self, master: int) -> Identity:
        """The terminal's (device, inode), for finding who holds it later."""
        flags = os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC
        slave = fcntl.ioctl(master, _TIOCGPTPEER, flags)
        try:
            return identity_of_fd(slave)
        finally:
            os.close(slave)

    # Reaping.

    def _reap(self) -> None:
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG)
            except ChildProcessError:
                return
            if info is None:
                return
            pid = info.si_pid
            launch = self.launches.pop(pid, None)
            if launch is not None:
                launch.runtime.returncode = info.si_status
                self._runtime_exited(launch, info)
                continue
            record = self.by_pid.pop(pid, None)
            if record is not None:
                self._process_exited(record, info)
                continue
            # Exited before its runtime reported its PID (or an orphan of a runtime).
            now = time.monotonic()
            self.unclaimed[pid] = (info, now)
            for stale in [p for p, (_, at) in self.unclaimed.items() if now - at > _UNCLAIMED_KEEP]:
                del self.unclaimed[stale]

    def _process_exited(self, record: Tracked, info: os.waitid_result) -> None:
        record.exited = True
        self._reply({"op": "exited", "id": record.id, **_exit_fields(info)})
        self._forget_if_done(record)

    def _forget_if_done(self, record: Tracked) -> None:
        if record.released and not record.hanging_up:
            self._drop_terminal(record)  # the kernel hangs up whoever still holds it
            if record.exited:
                self.tracked.pop(record.id, None)

    def _drop_terminal(self, record: Tracked) -> None:
        if record.terminal is not None:
            os.close(record.terminal)
            record.terminal = None

    # Requests about a started process.

    def _signal(self, request_id: int, signum: int) -> None:
        record = self.tracked.get(request_id)
        if record is None or record.exited:
            return
        # Not yet reaped, so the PID (and the group it leads) is still this process's.
        try:
            os.killpg(record.pid, signum)
        except ProcessLookupError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(record.pid, signum)

    def _release(self, request_id: int) -> None:
        record = self.tracked.get(request_id)
        if record is not None:
            record.released = True
            self._forget_if_done(record)

    def _hangup_request(self, request_id: int, grace: float) -> None:
        record = self.tracked.get(request_id)
        if record is None:
            self._reply({"op": "hungup", "id": request_id})
            return
        self._hang_up(record, grace, reply=True)

    def _hang_up(self, record: Tracked, grace: float, *, reply: bool) -> None:
        if record.hanging_up:
            return
        record.hanging_up = True
        record.released = True
        self.hangups += 1
        self._signal_holders(record, (signal.SIGHUP, signal.SIGCONT), spare_ignoring=False)
        deadline = time.monotonic() + grace

        def check() -> None:
            left = [h for h in self._holders(record) if not h.ignores_hangup]
            if left and time.monotonic() < deadline:
                self._at(_HANGUP_POLL, check)
                return
            if left:
                self._signal_holders(record, (signal.SIGKILL,), spare_ignoring=True)
            record.hanging_up = False
            self.hangups -= 1
            if reply:
                self._reply({"op": "hungup", "id": record.id})
            self._forget_if_done(record)

        self._at(_HANGUP_POLL if grace > 0 else 0, check)

    def _holders(self, record: Tracked) -> list[Any]:
        return find_holders(record.namespace, record.targets, exclude=os.getpid())

    def _signal_holders(
        self, record: Tracked, signals: tuple[int, ...], *, spare_ignoring: bool
    ) -> None:
        for holder in self._holders(record):
            if spare_ignoring and holder.ignores_hangup:
                continue
            # A holder is not our child: a pidfd pins it between the scan and the signal.
            try:
                pidfd = os.pidfd_open(holder.pid)
            except ProcessLookupError:
                continue
            try:
                if pid_namespace(holder.pid) != record.namespace:
                    continue  # the PID was reused by another process before the pidfd
                for signum in signals:
                    with contextlib.suppress(ProcessLookupError):
                        signal.pidfd_send_signal(pidfd, signum)
            finally:
                os.close(pidfd)

    # Ending.

    def _gateway_lost(self) -> None:
        if self.gateway_gone:
            return
        self.gateway_gone = True
        self.outbox.clear()
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(self.control)
        self.control.close()
        for record in list(self.tracked.values()):
            self._hang_up(record, self.grace, reply=False)

    def _cleanup(self) -> None:
        if self.state_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--state-dir")
    parser.add_argument("--hangup-grace", type=float, default=2.0)
    args = parser.parse_args(argv)
    control = socket.socket(fileno=args.control_fd)
    Shim(control, args.state_dir, args.hangup_grace).run()


if __name__ == "__main__":
    main()
