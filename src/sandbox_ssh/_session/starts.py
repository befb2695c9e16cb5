"""Process starts: bounded in number, and served fairly.

Starting a process costs the runtime tens of milliseconds of CPU (a runc
exec, or dockerd's exec create and start), so a burst of hundreds of starts
is a queue. Served first come, first served, one connection opening many
sessions, or one busy sandbox, would make everybody else wait behind it.
So waiting starts are served round-robin over sandboxes; within a sandbox,
the connection that has been served least in its current backlog goes next,
and among those the one with the fewest starts waiting (a newcomer's single
session goes before the first turns of a burst's connections), then the one
waiting longest; a connection's own starts go in order. Only a sustained
stream of new connections, each faster than the starts can be served, could
hold back a connection with a backlog: the runtime is overloaded then anyway.

A sandbox is untrusted: its root can make every start hang (a FIFO where the
runtime reads /etc/group, a /bin/sh that never runs). So one sandbox holds at
most ``per_sandbox`` of the slots at once, and a start that holds its slot
longer than ``timeout`` is abandoned with a one-line reason.
"""

from __future__ import annotations

import asyncio
import collections
import os
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

_Queue = collections.OrderedDict[str, collections.deque["asyncio.Future[None]"]]


def default_concurrency() -> int:
    # Runtime starts are CPU-bound; a few per core keeps the cores busy without
    # letting a burst queue up inside the runtime, where it would be served unfairly.
    return max(4, 2 * (os.cpu_count() or 1))


class StartTimeout(Exception):
    """A start held its slot too long; ``str()`` is the one-line reason for the client."""


DEFAULT_START_TIMEOUT = 30.0


def default_share(concurrency: int) -> int:
    return max(1, concurrency // 2)


class StartScheduler:
    def __init__(
        self,
        concurrency: int | None = None,
        per_sandbox: int | None = None,
        timeout: float = DEFAULT_START_TIMEOUT,
    ) -> None:
        self.concurrency = concurrency or default_concurrency()
        self.per_sandbox = min(per_sandbox or default_share(self.concurrency), self.concurrency)
        self.timeout = timeout
        self._running = 0
        self._running_by_sandbox: collections.Counter[str] = collections.Counter()
        self._waiting: collections.OrderedDict[str, _Queue] = collections.OrderedDict()
        # Starts granted to each connection that still has some waiting.
        self._served: collections.Counter[str] = collections.Counter()

    @property
    def running(self) -> int:
        return self._running

    def running_in(self, sandbox: str) -> int:
        return self._running_by_sandbox[sandbox]

    @property
    def waiting(self) -> int:
        return sum(len(q) for conns in self._waiting.values() for q in conns.values())

    async def run(self, sandbox: str, connection: str, start: Callable[[], Awaitable[T]]) -> T:
        """Run ``start()`` once a slot is free and it is this connection's turn."""
        await self._acquire(sandbox, connection)
        try:
            async with asyncio.timeout(self.timeout):
                return await start()
        except TimeoutError:
            raise StartTimeout(
                f"the sandbox did not start the process within {self.timeout:g} s"
            ) from None
        finally:
            self._release(sandbox)

    async def _acquire(self, sandbox: str, connection: str) -> None:
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        connections = self._waiting.setdefault(sandbox, collections.OrderedDict())
        connections.setdefault(connection, collections.deque()).append(granted)
        self._grant()
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self._release(sandbox)  # granted just as the waiter left: pass the slot on
            else:
                self._forget(sandbox, connection, granted)
            raise

    def _forget(self, sandbox: str, connection: str, granted: asyncio.Future[None]) -> None:
        connections = self._waiting.get(sandbox)
        queue = connections.get(connection) if connections else None
        if connections is None or queue is None or granted not in queue:
            return
        queue.remove(granted)
        if not queue:
            del connections[connection]
            self._served.pop(connection, None)
        if not connections:
            del self._waiting[sandbox]

    def _release(self, sandbox: str) -> None:
        self._running -= 1
        self._running_by_sandbox[sandbox] -= 1
        if self._running_by_sandbox[sandbox] <= 0:
            del self._running_by_sandbox[sandbox]
        self._grant()

    def _grant(self) -> None:
        while self._running < self.concurrency:
            found = self._next()
            if found is None:
                return
            sandbox, granted = found
            if granted.done():
                continue  # its waiter was cancelled and has not run yet to forget it
            self._running += 1
            self._running_by_sandbox[sandbox] += 1
            granted.set_result(None)

    def _next(self) -> tuple[str, asyncio.Future[None]] | None:
        """The next start to serve: the first sandbox in turn that is below its share."""
        for sandbox, connections in self._waiting.items():
            if self._running_by_sandbox[sandbox] >= self.per_sandbox:
                continue
            # The least served connection; among equals, the one with the fewest starts
            # waiting, then the one waiting longest (min keeps the first of equals).
            connection = min(
                connections, key=lambda name: (self._served[name], len(connections[name]))
            )
            queue = connections[connection]
            granted = queue.popleft()
            if queue:
                self._served[connection] += 1
            else:
                del connections[connection]
                self._served.pop(connection, None)
            if connections:
                self._waiting.move_to_end(sandbox)
            else:
                del self._waiting[sandbox]
            return sandbox, granted
        return None
