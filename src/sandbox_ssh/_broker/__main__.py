"""``python -m sandbox_ssh._broker``: serve the fronts whose sockets this process was given.

Started by ``sandbox-ssh serve`` (which execs into it once its fronts are forked, so
that it is their parent), or by a test or an embedding platform that made the
socketpair. It exits once every front's connection has ended: 0 when every front it
was told of exited 0, else 1. SIGTERM, SIGINT and SIGHUP are passed on to the fronts
(which drain, stop or reopen their logs); the broker itself stops with them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket

from .._logs import configure as configure_logging
from ..providers.docker import EXEC_PATHS, DockerProvider
from .server import Broker

log = logging.getLogger("sandbox_ssh.broker")


def _front(value: str) -> tuple[int, int | None]:
    fd, _, pid = value.partition(":")
    return int(fd), int(pid) if pid else None


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sandbox_ssh._broker", description=__doc__)
    parser.add_argument(
        "--front",
        action="append",
        type=_front,
        required=True,
        help="FD[:PID]: a front's socket (AF_UNIX SOCK_SEQPACKET), and its PID when the "
        "front is this process's child",
    )
    parser.add_argument("--docker-host")
    parser.add_argument("--session-label", default="sandbox-ssh.session")
    parser.add_argument("--exec-path", choices=EXEC_PATHS, default="auto")
    parser.add_argument("--hangup-grace", type=float, default=2.0)
    parser.add_argument("--start-timeout", type=float, default=30.0)
    parser.add_argument(
        "--remove-at-exit",
        help="the fronts' runtime folder, made by serve: removed once they are all gone",
    )
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--log-format", choices=("text", "json"), default="text")
    return parser.parse_args(argv)


async def serve(options: argparse.Namespace) -> int:
    provider = DockerProvider(
        docker_host=options.docker_host,
        label=options.session_label,
        exec_path=options.exec_path,
        hangup_grace=options.hangup_grace,
        answer_timeout=options.start_timeout,
    )
    broker = Broker(provider, options.start_timeout)
    loop = asyncio.get_running_loop()
    children = [pid for _, pid in options.front if pid is not None]

    def pass_on(signum: int) -> None:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(signum, pass_on, signum)
    for index, (fd, pid) in enumerate(options.front):
        sock = socket.socket(fileno=fd)
        broker.serve(sock, f"{index + 1}" + (f" (pid {pid})" if pid else ""))
    try:
        await broker.until_all_gone()
    finally:
        await provider.close()
    failed = 0
    for pid in children:
        _, status = await asyncio.to_thread(os.waitpid, pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            failed += 1
            log.warning("front (pid %d) exited with %s", pid, code)
    if options.remove_at_exit:
        shutil.rmtree(options.remove_at_exit, ignore_errors=True)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> None:
    options = parse(argv)
    configure_logging(options.log_level, options.log_format)
    try:
        import uvloop
    except ImportError:
        code = asyncio.run(serve(options))
    else:
        code = uvloop.run(serve(options))
    raise SystemExit(code)


if __name__ == "__main__":
    main()
