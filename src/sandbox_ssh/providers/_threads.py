"""Blocking work for a sandbox on threads of its own, with a bounded share per sandbox.

Entering a sandbox's namespaces or reading its files needs a thread (setns and
filesystem credentials are per thread). Whatever the sandbox does, its work
holds at most ``per_sandbox`` threads at once, all sandboxes together at most
``total``, and a caller waits at most ``timeout`` seconds. A thread that is still
stuck when its caller gave up keeps its slot until it really ends, so a sandbox
that wedges its own work runs out of its own share and no one else's.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
from collections.abc import Callable, Hashable
from typing import TypeVar

T = TypeVar("T")

# Defaults, listed in SECURITY.md ("Hostile sandboxes") and the README's limits table.
THREADS_PER_SANDBOX = 4
THREADS_TOTAL = 64
THREAD_WORK_TIMEOUT = 5.0


class SandboxTimeout(TimeoutError):
    """The sandbox's work did not finish in time (an OSError, like the failures it stands for)."""


class _Slots:
    """Counting slots whose waiters are served in order (asyncio side only)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.busy = 0
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def acquire(self) -> None:
        if self.busy < self.limit and not self.waiters:
            self.busy += 1
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(granted)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self.release()
            else:
                self.waiters.remove(granted)
            raise

    def release(self) -> None:
        self.busy -= 1
        while self.waiters and self.busy < self.limit:
            granted = self.waiters.popleft()
            if not granted.done():
                self.busy += 1
                granted.set_result(None)

    @property
    def idle(self) -> bool:
        return self.busy == 0 and not self.waiters


class ThreadBudget:
    def __init__(
        self,
        per_sandbox: int = THREADS_PER_SANDBOX,
        total: int = THREADS_TOTAL,
        timeout: float = THREAD_WORK_TIMEOUT,
    ) -> None:
        self.per_sandbox = per_sandbox
        self.timeout = timeout
        self._total: _Slots = _Slots(total)
        self._by_sandbox: dict[Hashable, _Slots] = {}
        self._idle_waiters: list[asyncio.Future[None]] = []

    async def wait_idle(self) -> None:
        """Return once no thread of this budget runs (stuck ones included)."""
        if self._total.busy:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._idle_waiters.append(waiter)
            await waiter

    def threads(self, sandbox: Hashable | None = None) -> int:
        """Threads running now, for one sandbox or for all."""
        if sandbox is None:
            return self._total.busy
        slots = self._by_sandbox.get(sandbox)
        return slots.busy if slots else 0

    async def run(
        self,
        sandbox: Hashable,
        work: Callable[[], T],
        discard: Callable[[T], None] | None = None,
    ) -> T:
        """``work()`` on a fresh thread, within the sandbox's share and the time bound.

        ``discard`` disposes of a result that arrives after the caller gave up (a socket).
        """
        loop = asyncio.get_running_loop()
        own = self._by_sandbox.get(sandbox)
        if own is None:
            own = self._by_sandbox[sandbox] = _Slots(self.per_sandbox)
        started = False
        try:
            async with asyncio.timeout(self.timeout):
                await own.acquire()
                try:
                    await self._total.acquire()
                except BaseException:
                    own.release()
                    raise
                started = True
                outcome = self._start(loop, sandbox, own, work, discard)
                try:
                    return await asyncio.shield(outcome)
                except BaseException:
                    outcome.cancel()  # its result, when it comes, is discarded
                    raise
        except TimeoutError:
            raise SandboxTimeout(
                f"the sandbox did not answer within {self.timeout:g} s"
                if started
                else f"the sandbox has {self.per_sandbox} operations stuck already"
            ) from None
        finally:
            if not started and own.idle:
                self._by_sandbox.pop(sandbox, None)

    def _start(
        self,
        loop: asyncio.AbstractEventLoop,
        sandbox: Hashable,
        own: _Slots,
        work: Callable[[], T],
        discard: Callable[[T], None] | None,
    ) -> asyncio.Future[T]:
        outcome: asyncio.Future[T] = loop.create_future()

        def settle(result: T | None, error: BaseException | None) -> None:
            own.release()
            self._total.release()
            if own.idle and self._by_sandbox.get(sandbox) is own:
                del self._by_sandbox[sandbox]
            if not self._total.busy:
                waiters, self._idle_waiters = self._idle_waiters, []
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)
            if outcome.cancelled():
                if error is None and discard is not None:
                    discard(result)  # type: ignore[arg-type]
            elif error is not None:
                outcome.set_exception(error)
            else:
                outcome.set_result(result)  # type: ignore[arg-type]

        def body() -> None:
            try:
                result: T | None = work()
                error: BaseException | None = None
            except BaseException as failure:  # handed to the caller
                result, error = None, failure
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(settle, result, error)

        threading.Thread(target=body, name="sandbox-ssh-ns", daemon=True).start()
        return outcome


# The one budget of this process: every provider's per-sandbox blocking work counts here.
SHARED = ThreadBudget()
