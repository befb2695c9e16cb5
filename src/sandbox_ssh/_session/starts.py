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


class StartScheduler:
    def __init__(self, concurrency: int | None = None) -> None:
        self.concurrency = concurrency or default_concurrency()
        self._running = 0
        self._waiting: collections.OrderedDict[str, _Queue] = collections.OrderedDict()
        # Starts granted to each connection that still has some waiting.
        self._served: collections.Counter[str] = collections.Counter()

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return sum(len(q) for conns in self._waiting.values() for q in conns.values())

    async def run(self, sandbox: str, connection: str, start: Callable[[], Awaitable[T]]) -> T:
        """Run ``start()`` once a slot is free and it is this connection's turn."""
        await self._acquire(sandbox, connection)
        try:
            return await start()
        finally:
            self._release()

    async def _acquire(self, sandbox: str, connection: str) -> None:
        if self._running < self.concurrency and not self._waiting:
            self._running += 1
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        connections = self._waiting.setdefault(sandbox, collections.OrderedDict())
        connections.setdefault(connection, collections.deque()).append(granted)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self._release()  # granted just as the waiter left: pass the slot on
            else:
                self._forget(sandbox, connection, granted)
            raise

    def _forget(self, sandbox: str, connection: str, granted: asyncio.Future[None]) -> None:
        connections = self._waiting.get(sandbox)
        queue = connections.get(connection) if connections else None
        if connections is None or queue is None:
            return
        queue.remove(granted)
        if not queue:
            del connections[connection]
            self._served.pop(connection, None)
        if not connections:
            del self._waiting[sandbox]

    def _release(self) -> None:
        self._running -= 1
        while self._running < self.concurrency:
            granted = self._next()
            if granted is None:
                return
            self._running += 1
            granted.set_result(None)

    def _next(self) -> asyncio.Future[None] | None:
        while self._waiting:
            sandbox, connections = next(iter(self._waiting.items()))
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
            return granted
        return None
