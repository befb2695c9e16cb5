"""asyncssh's session-channel callbacks, translated into session-logic calls."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping

import asyncssh

from .._session import login
from .._session.channel import SessionChannel
from ..hooks import ExitSignal, OutputStream, TerminalSize
from .internals import answer_deferred_request, round_trip

_MAX_TERMINAL_DIMENSION = 10_000

# Builds the session logic for a channel; the connection supplies it.
SessionFactory = Callable[["SSHChannelAdapter"], SessionChannel]


def _terminal_size(cols: int, rows: int) -> TerminalSize:
    clamp = _MAX_TERMINAL_DIMENSION
    return TerminalSize(cols=max(1, min(cols, clamp)), rows=max(1, min(rows, clamp)))


class SSHChannelAdapter(asyncssh.SSHServerSession[bytes]):
    """Implements the session logic's ChannelOutput on an asyncssh server channel."""

    def __init__(
        self,
        make_session: SessionFactory,
        on_close: Callable[[SSHChannelAdapter], None] | None = None,
    ) -> None:
        self._make_session = make_session
        self._on_close = on_close
        self._chan: asyncssh.SSHServerChannel[bytes] | None = None
        self._session: SessionChannel | None = None
        self._writable = asyncio.Event()
        self._writable.set()
        self._exited = False
        self._mode: tuple[login.Mode, str | None] = (login.Mode.SHELL, None)
        self._subsystem_task: asyncio.Task[None] | None = None

    # ChannelOutput

    def write(self, data: bytes, stream: OutputStream) -> None:
        if self._chan is None or self._exited:
            return
        with contextlib.suppress(BrokenPipeError, OSError):
            if stream is OutputStream.STDERR:
                self._chan.write_stderr(data)
            else:
                self._chan.write(data)

    async def drain(self) -> None:
        await self._writable.wait()

    def writable(self) -> bool:
        return self._writable.is_set()

    def pause_input(self) -> None:
        if self._chan is not None:
            self._chan.pause_reading()

    def resume_input(self) -> None:
        if self._chan is not None:
            self._chan.resume_reading()

    def exit(self, status: int) -> None:
        if self._chan is None or self._exited:
            return
        self._exited = True
        with contextlib.suppress(BrokenPipeError, OSError):
            self._chan.exit(status & 0xFF if status >= 0 else 255)

    def exit_signal(self, signal: ExitSignal) -> None:
        if self._chan is None or self._exited:
            return
        self._exited = True
        with contextlib.suppress(BrokenPipeError, OSError):
            self._chan.exit_with_signal(signal.name, signal.core_dumped)

    # asyncssh callbacks

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self._chan = chan
        self._session = self._make_session(self)

    def pty_requested(
        self,
        term_type: str,
        term_size: tuple[int, int, int, int],
        term_modes: Mapping[int, int],
    ) -> bool:
        assert self._session is not None
        cols, rows = term_size[0], term_size[1]
        return self._session.request_pty(
            term_type or "xterm", _terminal_size(cols or 80, rows or 24), dict(term_modes)
        )

    def shell_requested(self) -> bool:
        self._mode = (login.Mode.SHELL, None)
        return True

    def exec_requested(self, command: str) -> bool:
        self._mode = (login.Mode.EXEC, command)
        return True

    # None defers the reply, which asyncssh supports but does not type.
    def subsystem_requested(self, subsystem: str) -> bool | None:  # type: ignore[override]
        assert self._session is not None
        self._mode = (login.Mode.DIRECT, None)
        # Whether the sandbox has the subsystem is only known after asking it. asyncssh
        # defers the reply when this returns None, until it is answered.
        self._subsystem_task = asyncio.ensure_future(self._answer_subsystem(subsystem))
        return None

    async def _answer_subsystem(self, subsystem: str) -> None:
        assert self._session is not None
        try:
            accepted = await self._session.prepare_subsystem(subsystem)
        except Exception:
            accepted = False
        if self._chan is None or self._exited:
            return
        if not accepted:
            await self._flush_to_client()
        answer_deferred_request(self._chan, accepted)

    async def _flush_to_client(self) -> None:
        """Wait for one round trip, so the client has printed our stderr before the refusal.

        OpenSSH exits on a refused subsystem without draining channel data that
        arrived in the same read; a keepalive answered in between separates them.
        """
        assert self._chan is not None
        with contextlib.suppress(Exception):
            await asyncio.wait_for(round_trip(self._chan.get_connection()), 2)

    def session_started(self) -> None:
        assert self._session is not None and self._chan is not None
        for name, value in self._chan.get_environment().items():
            self._session.set_env(name, value)
        mode, command = self._mode
        self._session.start(mode, command)

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if self._session is not None and datatype is None:
            self._session.feed_stdin(data)

    def eof_received(self) -> bool:
        if self._session is not None:
            self._session.stdin_eof()
        return True  # keep the channel half-open: output and exit status still follow

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        if self._session is not None:
            self._session.resize(_terminal_size(width, height))

    def signal_received(self, signal: str) -> None:
        if self._session is not None:
            self._session.signal(signal)

    def break_received(self, msec: int) -> bool:
        return False

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self._exited = True
        self._writable.set()
        if self._session is not None:
            self._session.close()
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            on_close(self)
