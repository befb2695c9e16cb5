"""``sandbox-ssh serve`` started as root: ports bound, fronts forked and confined, then the broker.

1. As root, before anything reads a client's byte: the front's user (made when it is
   the default and missing), its state and log paths, the host keys, and one
   listening socket per front (``SO_REUSEPORT``, so that another instance can take the
   port while this one drains), plus the metrics endpoint's.
2. One socketpair per front, then ``fork``: each front closes what is not its own,
   builds its server from the options as root (token and key files may be root's),
   confines itself (``confine.py``) and only then starts its event loop and accepts.
3. The parent closes every listening socket and front end, and ``exec``s the broker
   (``python -m sandbox_ssh._broker``): the only root process, the fronts' parent, with
   no network socket. serve's exit status is the broker's: non-zero when a front
   failed, or when the broker itself died, so that a supervisor restarts it.

The Kubernetes provider needs no privilege at all: its fronts are forked and confined
the same way, and the parent confines itself too instead of becoming a broker.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .confine import Confinement, confine
from .user import FrontUser

log = logging.getLogger("sandbox_ssh")


@dataclass
class FrontSockets:
    """What one front is given: its listener, its metrics listener, its broker socket."""

    index: int
    listen: socket.socket
    metrics: socket.socket | None
    broker: socket.socket | None

    def all(self) -> list[socket.socket]:
        return [s for s in (self.listen, self.metrics, self.broker) if s is not None]


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket, ``SO_REUSEPORT`` like the gateway's own (as root: any port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host or ("::" if family == socket.AF_INET6 else "0.0.0.0"), port))
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def run_fronts(
    fronts: Sequence[FrontSockets],
    user: FrontUser,
    writable: Sequence[Path],
    serve_front: Callable[[FrontSockets, Callable[[], Confinement]], int],
    unreachable: Sequence[str] = (),
) -> list[int]:
    """Fork one confined front per entry; returns their PIDs. The parent keeps no socket
    of theirs: it closes each front's listeners and broker end."""
    pids: list[int] = []
    for front in fronts:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                for other in fronts:
                    if other is not front:
                        for sock in other.all():
                            sock.close()
                code = serve_front(front, lambda: confine(user, writable, unreachable))
            except BaseException:
                log.exception("front %d failed", front.index)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        pids.append(pid)
    return pids


def become_broker(brokers: Sequence[tuple[socket.socket, int]], broker_args: Sequence[str]) -> None:
    """Replace this process with the broker, serving the fronts (socket, PID) given."""
    argv = [sys.executable, "-m", "sandbox_ssh._broker"]
    for sock, pid in brokers:
        os.set_inheritable(sock.fileno(), True)
        argv += ["--front", f"{sock.fileno()}:{pid}"]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [*argv, *broker_args])
