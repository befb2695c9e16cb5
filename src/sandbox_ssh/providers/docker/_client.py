"""One shared aiodocker client per provider, with the connection-pool limit lifted.

Every live exec holds one pooled connection for its whole life, so aiohttp's
default limit of 100 would hang the 101st session (and every API call made
while 100 are open).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from collections.abc import Iterator
from pathlib import Path

import aiodocker
import aiohttp

from ...hooks import SandboxError

DEFAULT_SOCKET = "/var/run/docker.sock"


def resolve_docker_host(docker_host: str | None) -> str:
    return docker_host or os.environ.get("DOCKER_HOST") or f"unix://{DEFAULT_SOCKET}"


def _tls_context() -> ssl.SSLContext | None:
    if not os.environ.get("DOCKER_TLS_VERIFY"):
        return None
    cert_dir = Path(os.environ.get("DOCKER_CERT_PATH") or Path.home() / ".docker")
    context = ssl.create_default_context(cafile=str(cert_dir / "ca.pem"))
    context.load_cert_chain(str(cert_dir / "cert.pem"), str(cert_dir / "key.pem"))
    return context


def open_client(docker_host: str | None) -> tuple[aiodocker.Docker, aiohttp.BaseConnector]:
    """The client and its connector, which the caller closes (aiodocker does not)."""
    host = resolve_docker_host(docker_host)
    connector: aiohttp.BaseConnector
    if host.startswith("unix://"):
        connector = aiohttp.UnixConnector(host.removeprefix("unix://"), limit=0)
        return aiodocker.Docker(url="unix://localhost", connector=connector), connector
    if host.startswith(("tcp://", "http://", "https://")):
        context = _tls_context()
        scheme = "https://" if context or host.startswith("https://") else "http://"
        url = scheme + host.split("://", 1)[1]
        connector = aiohttp.TCPConnector(limit=0, ssl=context if context else False)
        return aiodocker.Docker(url=url, connector=connector), connector
    raise ValueError(f"unsupported Docker host {host!r}: use unix://PATH or tcp://HOST:PORT")


# What a call to an engine that is down, gone or unreachable raises; aiodocker also turns
# connection failures into DockerError with its own status 900.
UNREACHABLE = (aiohttp.ClientError, OSError, asyncio.TimeoutError)
_AIODOCKER_CANNOT_CONNECT = 900


def is_unreachable(error: BaseException) -> bool:
    if isinstance(error, aiodocker.DockerError):
        return error.status == _AIODOCKER_CANNOT_CONNECT
    return isinstance(error, UNREACHABLE)


def unreachable_reason(error: BaseException) -> str:
    if isinstance(error, aiodocker.DockerError):
        text = str(error.message)
        # "Cannot connect to Docker Engine via unix://localhost [Cannot connect to ...]"
        if text.endswith("]") and " [" in text:
            text = text.split(" [", 1)[1][:-1]
    else:
        text = str(error)
    text = " ".join(text.split()) or type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


@contextlib.contextmanager
def runtime_errors() -> Iterator[None]:
    """Turn "the engine does not answer" into one SandboxError the client can read."""
    try:
        yield
    except SandboxError:
        raise
    except (*UNREACHABLE, aiodocker.DockerError) as error:
        if not is_unreachable(error):
            raise
        reason = unreachable_reason(error)
        raise SandboxError(f"the sandbox runtime is unavailable: {reason}") from error


def refused_as_not_running(error: aiodocker.DockerError) -> bool:
    """An exec refused because the container is stopped, in dockerd's or Podman's words."""
    message = str(error.message)
    # dockerd: 409 "Container ID is not running"; Podman: 500 "can only create exec
    # sessions on running containers: container state improper".
    return "is not running" in message or "on running containers" in message


def engine_error(error: aiodocker.DockerError, what: str) -> SandboxError:
    """``what: <the engine's message>``, or that the engine is unavailable."""
    if refused_as_not_running(error):
        return SandboxError("the sandbox is not running")
    if is_unreachable(error):
        return SandboxError(f"the sandbox runtime is unavailable: {unreachable_reason(error)}")
    return SandboxError(f"{what}: {error.message}")
