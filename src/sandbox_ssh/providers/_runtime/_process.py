"""A process started through the runtime: its stdio are plain descriptors the gateway owns.

Without a terminal they are three pipes, so stderr stays apart; with one, the
PTY master. Bytes move with one read() or write() each way and no copy by
any daemon. Resizing is an ioctl on the master, and hanging up is closing
it, so the kernel's own SIGHUP does the work, as with sshd.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import os
import signal
import struct
import termios
from typing import Protocol

from ...hooks import ExitSignal, OutputSink, OutputStream, SandboxError, TerminalSize
from ._launcher import ExitInfo, Launched

_READ_SIZE = 1 << 18
# Stop reading from the sandbox while this much output waits for the SSH client.
_OUTPUT_HIGH_WATER = 1 << 20
_OUTPUT_LOW_WATER = 1 << 18

# The names RFC 4254 gives signals in exit-signal; sshd sends "SIG@openssh.com" for others.
_SSH_SIGNAL_NAMES = {
    signal.SIGABRT: "ABRT",
    signal.SIGALRM: "ALRM",
    signal.SIGFPE: "FPE",
    signal.SIGHUP: "HUP",
    signal.SIGILL: "ILL",
    signal.SIGINT: "INT",
    signal.SIGKILL: "KILL",
    signal.SIGPIPE: "PIPE",
    signal.SIGQUIT: "QUIT",
    signal.SIGSEGV: "SEGV",
    signal.SIGTERM: "TERM",
    signal.SIGUSR1: "USR1",
    signal.SIGUSR2: "USR2",
}


def ssh_signal_name(signum: int) -> str:
    return _SSH_SIGNAL_NAMES.get(signal.Signals(signum), "SIG@openssh.com")


class _Reader:
    """Reads one descriptor into the shared output queue until EOF (or EIO, for a PTY)."""

    def __init__(self, output: _Output, fd: int, stream: OutputStream, owns_fd: bool) -> None:
        self.output = output
        self.fd = fd
        self.stream = stream
        self.owns_fd = owns_fd
        self.open = True
        os.set_blocking(fd, False)
        output.loop.add_reader(fd, self._on_readable)

    def _on_readable(self) -> None:
        try:
            data = os.read(self.fd, _READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""  # EIO: every holder of the terminal closed it
        if data:
            self.output.push(self.stream, data)
        else:
            self.finish()

    def pause(self) -> None:
        if self.open:
            self.output.loop.remove_reader(self.fd)

    def resume(self) -> None:
        if self.open:
            self.output.loop.add_reader(self.fd, self._on_readable)

    def finish(self) -> None:
        if not self.open:
            return
        self.open = False
        self.output.loop.remove_reader(self.fd)
        if self.owns_fd:
            os.close(self.fd)
        self.output.changed()


class _Output:
    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.readers: list[_Reader] = []
        self.chunks: collections.deque[tuple[OutputStream, bytes]] = collections.deque()
        self.size = 0
        self.paused = False
        self.ready = asyncio.Event()
        self.sink: OutputSink | None = None

    def push(self, stream: OutputStream, data: bytes) -> None:
        if self.sink is not None and not self.chunks:
            if not self.sink(stream, data):
                self.sink = None
            return
        self.chunks.append((stream, data))
        self.size += len(data)
        if self.size > _OUTPUT_HIGH_WATER and not self.paused:
            self.paused = True
            for reader in self.readers:
                reader.pause()
        self.ready.set()

    def changed(self) -> None:
        self.ready.set()

    async def next(self) -> tuple[OutputStream, bytes] | None:
        while not self.chunks:
            if not any(reader.open for reader in self.readers):
                return None
            self.ready.clear()
            await self.ready.wait()
        chunk = self.chunks.popleft()
        self.size -= len(chunk[1])
        if self.paused and self.size < _OUTPUT_LOW_WATER:
            self.paused = False
            for reader in self.readers:
                reader.resume()
        return chunk

    def close(self) -> None:
        for reader in self.readers:
            reader.finish()


class ProcessControl(Protocol):
    """What controls a started process: the launcher itself, or the broker on its behalf."""

    def signal(self, request_id: int, signum: int) -> None: ...

    async def hangup(self, request_id: int) -> None: ...

    def release(self, request_id: int) -> None: ...


class RuntimeProcess:
    """Implements :class:`sandbox_ssh.hooks.SandboxProcess`, ``ExitSignalReporter`` and
    ``DirectStdio``."""

    def __init__(self, launcher: ProcessControl, launched: Launched) -> None:
        self._launcher = launcher
        self._id = launched.id
        self.pid = launched.pid  # on the host
        self._exit = launched.exited
        self._output = _Output()
        self._master = launched.master
        self._stdin = launched.master if launched.master is not None else launched.stdin
        if launched.master is not None:
            self._output.readers.append(
                _Reader(self._output, launched.master, OutputStream.STDOUT, owns_fd=False)
            )
        else:
            assert launched.stdout is not None and launched.stderr is not None
            self._output.readers += [
                _Reader(self._output, launched.stdout, OutputStream.STDOUT, owns_fd=True),
                _Reader(self._output, launched.stderr, OutputStream.STDERR, owns_fd=True),
            ]
        if self._stdin is not None:
            os.set_blocking(self._stdin, False)
        self._stdin_open = self._stdin is not None
        self._closed = False
        self._released = False

    @property
    def tty(self) -> bool:
        return self._master is not None

    def write_stdin_nowait(self, data: bytes) -> int:
        if not self._stdin_open or self._stdin is None:
            return len(data)
        try:
            return os.write(self._stdin, data)
        except BlockingIOError:
            return 0
        except OSError:
            self._stdin_open = False
            return len(data)

    def deliver_output(self, sink: OutputSink | None) -> None:
        self._output.sink = sink

    async def write_stdin(self, data: bytes) -> None:
        view = memoryview(data)
        while view and self._stdin_open and self._stdin is not None:
            try:
                view = view[os.write(self._stdin, view) :]
            except BlockingIOError:
                await self._writable(self._stdin)
            except OSError:
                self._stdin_open = False  # the process closed its stdin, or is gone

    async def _writable(self, fd: int) -> None:
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        loop.add_writer(fd, ready.set_result, None)
        try:
            await ready
        finally:
            loop.remove_writer(fd)

    async def close_stdin(self) -> None:
        if self._master is None and self._stdin_open and self._stdin is not None:
            self._stdin_open = False
            os.close(self._stdin)
            self._stdin = None

    async def read_output(self) -> tuple[OutputStream, bytes] | None:
        return await self._output.next()

    async def _exit_info(self) -> ExitInfo:
        try:
            return await asyncio.shield(self._exit)
        except SandboxError:
            raise
        except Exception as error:
            raise SandboxError(f"lost the process's exit status: {error}") from error

    async def wait(self) -> int:
        info = await self._exit_info()
        if info.signal is not None:
            return 128 + info.signal
        return info.code if info.code is not None else 255

    def exit_signal(self) -> ExitSignal | None:
        if not self._exit.done() or self._exit.cancelled() or self._exit.exception():
            return None
        info = self._exit.result()
        if info.signal is None:
            return None
        return ExitSignal(ssh_signal_name(info.signal), info.core_dumped)

    async def resize(self, size: TerminalSize) -> None:
        if self._master is None or self._closed:
            return
        with contextlib.suppress(OSError):
            fcntl.ioctl(
                self._master, termios.TIOCSWINSZ, struct.pack("HHHH", size.rows, size.cols, 0, 0)
            )

    async def signal(self, signal_name: str) -> None:
        if not self._exit.done():
            self._launcher.signal(self._id, signal.Signals["SIG" + signal_name].value)

    async def hangup(self) -> None:
        self._close_stdio()
        self._released = True
        await self._launcher.hangup(self._id)

    async def close(self) -> None:
        self._close_stdio()
        if not self._released and self._exit.done():
            self._released = True
            self._launcher.release(self._id)

    def _close_stdio(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stdin_open = False
        self._output.close()
        if self._master is None and self._stdin is not None:
            os.close(self._stdin)
        if self._master is not None:
            os.close(self._master)  # the terminal hangs up
        self._stdin = None


class RefusedProcess:
    """What a runtime's refusal looks like to the session: its reason on stderr, and a status.

    Docker reports a command it could not execute this way (127 when it is
    missing, 126 when it may not run); the runtime path does the same.
    """

    def __init__(self, message: str, status: int) -> None:
        self.message = message
        self.status = status
        self._pending: list[tuple[OutputStream, bytes]] = [
            (OutputStream.STDERR, message.encode(errors="replace") + b"\n")
        ]

    async def write_stdin(self, data: bytes) -> None:
        pass

    async def close_stdin(self) -> None:
        pass

    async def read_output(self) -> tuple[OutputStream, bytes] | None:
        return self._pending.pop() if self._pending else None

    async def wait(self) -> int:
        return self.status

    async def resize(self, size: TerminalSize) -> None:
        pass

    async def signal(self, signal_name: str) -> None:
        pass

    async def hangup(self) -> None:
        pass

    async def close(self) -> None:
        pass
