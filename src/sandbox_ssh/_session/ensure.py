"""One ensure per session at a time, bounded in time, shared by every connection waiting on it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ..hooks import SandboxEnsurer, StartProgress

log = logging.getLogger("sandbox_ssh.session")

# How long an ensure may run before the waiting client is told what is happening.
SLOW_ENSURE_NOTICE = 0.5


def progress_of(ensurer: SandboxEnsurer | None, session_id: str) -> str:
    """`` (what it waits for)`` when the ensurer can tell (StartProgress), else nothing."""
    if not isinstance(ensurer, StartProgress):
        return ""
    progress = " ".join(str(ensurer.start_progress(session_id) or "").split())[:80]
    return f" ({progress})" if progress else ""


class EnsureTimeout(Exception):
    pass


class EnsureCoordinator:
    """Joins concurrent ensures of one session; a waiter leaving never cancels the shared one."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._running: dict[str, asyncio.Task[None]] = {}

    def in_flight(self, session_id: str) -> bool:
        return session_id in self._running

    async def ensure(
        self,
        ensurer: SandboxEnsurer,
        session_id: str,
        on_slow: Callable[[], None] | None = None,
    ) -> None:
        task = self._running.get(session_id)
        if task is None:
            task = asyncio.ensure_future(self._bounded(ensurer, session_id))
            self._running[session_id] = task
            task.add_done_callback(lambda done: self._forget(session_id, done))
        if on_slow is not None and not task.done():
            done, _ = await asyncio.wait({task}, timeout=SLOW_ENSURE_NOTICE)
            if not done:
                on_slow()
        # shield: a client that disconnects stops waiting, but the start goes on for the others.
        await asyncio.shield(task)

    async def _bounded(self, ensurer: SandboxEnsurer, session_id: str) -> None:
        try:
            await asyncio.wait_for(ensurer.ensure_sandbox(session_id), self.timeout)
        except TimeoutError:
            log.warning(
                "ensuring the sandbox of session %s took longer than %gs", session_id, self.timeout
            )
            raise EnsureTimeout(
                f"the sandbox did not start within {self.timeout:g}s"
                f"{progress_of(ensurer, session_id)}"
            ) from None

    def _forget(self, session_id: str, task: asyncio.Task[None]) -> None:
        if self._running.get(session_id) is task:
            del self._running[session_id]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter got it already, or nobody waits
