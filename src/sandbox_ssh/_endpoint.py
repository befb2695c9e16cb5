"""The operator's HTTP endpoint: /metrics (Prometheus), /healthz and /readyz.

/healthz answers 200 while the process serves. /readyz answers 200 only while
the SSH listener is up and the sandbox provider answers; otherwise 503, with
the reason as the body, so that a load balancer sends no one to an instance
that cannot start a session.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable

from aiohttp import web

from ._metrics import Metrics
from ._session.resolve import one_line

log = logging.getLogger("sandbox_ssh.endpoint")

_READY_TIMEOUT = 3.0

# Returns None when ready, else why not (one line).
ReadinessCheck = Callable[[], Awaitable[str | None]]


class Endpoint:
    def __init__(self, metrics: Metrics, ready: ReadinessCheck) -> None:
        self._metrics = metrics
        self._ready = ready
        self._runner: web.AppRunner | None = None

    async def start(
        self, host: str, port: int, reuse_port: bool = False, sock: socket.socket | None = None
    ) -> int:
        """Serve on ``host:port``, or on ``sock`` when given (bound before privileges were
        given up); returns the port."""
        app = web.Application()
        app.router.add_get("/metrics", self._serve_metrics)
        app.router.add_get("/healthz", self._serve_health)
        app.router.add_get("/readyz", self._serve_ready)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site: web.BaseSite
        if sock is not None:
            site = web.SockSite(self._runner, sock)
        else:
            site = web.TCPSite(self._runner, host or None, port, reuse_port=reuse_port or None)
        await site.start()
        addresses = self._runner.addresses
        bound = int(addresses[0][1]) if addresses else port
        log.info("metrics and health on %s:%d", host or "*", bound)
        return bound

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def _serve_metrics(self, request: web.Request) -> web.Response:
        body = self._metrics.exposition()
        return web.Response(body=body, content_type="text/plain", charset="utf-8")

    async def _serve_health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _serve_ready(self, request: web.Request) -> web.Response:
        try:
            problem = await asyncio.wait_for(self._ready(), _READY_TIMEOUT)
        except TimeoutError:
            problem = f"the sandbox provider did not answer within {_READY_TIMEOUT:g}s"
        except Exception as error:
            problem = one_line(error)
        if problem:
            return web.Response(status=503, text=f"not ready: {problem}\n")
        return web.Response(text="ready\n")
