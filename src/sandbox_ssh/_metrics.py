"""What the gateway counts, for Prometheus (prometheus-client).

Every label takes a value from a small fixed set: no session ID, address or
user is ever a label, so the number of series is bounded whatever the load.

With ``serve --workers N`` the workers share one view: prometheus-client's
multiprocess mode keeps each worker's values in files under
``PROMETHEUS_MULTIPROC_DIR``, which ``serve`` sets before any worker starts, and
whichever worker answers a scrape adds them all up.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Histogram

T = TypeVar("T")

# Upper bounds, in seconds, of the latency buckets (hooks and runtime calls).
_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_DURATION = (1, 10, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 24 * 3600)

CONNECTION_OUTCOMES = ("closed", "refused", "limited", "lost", "server_stopped")
CHANNEL_KINDS = (
    "exec",
    "shell",
    "pty",
    "sftp",
    "direct-tcpip",
    "direct-streamlocal",
    "tcpip-forward",
    "streamlocal-forward",
    "agent",
)


def multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class Metrics:
    """The gateway's metrics, in ``registry`` (a private one by default, for embedding)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # Imported here: prometheus-client picks its multiprocess storage when it is first
        # imported, and `serve --workers` sets PROMETHEUS_MULTIPROC_DIR only at start-up.
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.connections_open = Gauge(
            "sandbox_ssh_connections_open",
            "SSH connections open now.",
            registry=r,
            multiprocess_mode="livesum",  # used only with several workers
        )
        self.connections = Counter(
            "sandbox_ssh_connections",
            "SSH connections that ended, by how: closed, refused (by a hook, the provider or "
            "authentication), limited (by an admission limit), lost, server_stopped.",
            ["outcome"],
            registry=r,
        )
        self.refusals = Counter(
            "sandbox_ssh_refusals",
            "Connections or channels refused by a limit, by limit.",
            ["limit"],
            registry=r,
        )
        self.auth = Counter(
            "sandbox_ssh_auth",
            "Authentication results, by method and result.",
            ["method", "result"],
            registry=r,
        )
        self.channels = Counter(
            "sandbox_ssh_channels", "Channels opened, by kind.", ["kind"], registry=r
        )
        self.bytes = Counter(
            "sandbox_ssh_bytes",
            "Bytes on the SSH connections (TCP), by direction: in from clients, out to them.",
            ["direction"],
            registry=r,
        )
        self.session_duration = Histogram(
            "sandbox_ssh_connection_duration_seconds",
            "How long authenticated connections lasted.",
            buckets=_DURATION,
            registry=r,
        )
        self.hook_latency = Histogram(
            "sandbox_ssh_hook_seconds",
            "Latency of each hook call: ensure, user, env, track, authorized_keys.",
            ["hook"],
            buckets=_LATENCY,
            registry=r,
        )
        self.provider_latency = Histogram(
            "sandbox_ssh_provider_seconds",
            "Latency of provider calls: find, start_process, first_byte.",
            ["call"],
            buckets=_LATENCY,
            registry=r,
        )
        self.errors = Counter(
            "sandbox_ssh_errors",
            "Errors of hooks and the provider, by component and exception class.",
            ["component", "error"],
            registry=r,
        )
        self.processes = Gauge(
            "sandbox_ssh_processes",
            "Sandbox processes the gateway runs now.",
            registry=r,
            multiprocess_mode="livesum",
        )

    # Small helpers the layers call.

    async def timed(self, histogram: Histogram, label: str, call: Callable[[], Awaitable[T]]) -> T:
        started = time.monotonic()
        try:
            return await call()
        except BaseException as error:
            if not isinstance(error, (KeyboardInterrupt, SystemExit)):
                component = "provider" if histogram is self.provider_latency else "hook"
                self.errors.labels(component=f"{component}:{label}", error=_class(error)).inc()
            raise
        finally:
            histogram.labels(label).observe(time.monotonic() - started)

    def exposition(self) -> bytes:
        """The text format, with every worker's figures when several workers share a port."""
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        if multiprocess():
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)


def _class(error: BaseException) -> str:
    # A class name, from the few the code raises; anything else is "other".
    name = type(error).__name__
    known = {
        "SandboxError",
        "ConnectionRejected",
        "EnsureTimeout",
        "TimeoutError",
        "CancelledError",
        "HookError",
        "DockerError",
        "ClientError",
        "ClientConnectorError",
        "OSError",
        "ConnectionError",
        "RuntimeUnavailable",
    }
    return name if name in known else "other"
