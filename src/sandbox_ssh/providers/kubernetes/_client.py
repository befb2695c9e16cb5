"""The Kubernetes API clients: one for plain calls, one for the exec and portforward WebSockets."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.stream import WsApiClient

from ...hooks import SandboxError
from ._channels import OFFERED_PROTOCOLS, V4_PROTOCOL

_IN_CLUSTER_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"


class ApiUnavailable(SandboxError):
    """The API server did not answer (as opposed to answering no)."""


@dataclass
class KubeClients:
    api: client.ApiClient
    ws: WsApiClient

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def ws_core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.ws)

    async def close(self) -> None:
        await self.ws.close()
        await self.api.close()


def _kubeconfig_file(kubeconfig: str | None, context: str | None) -> str | None:
    """The kubeconfig to read, or None for the in-cluster service account."""
    explicit = kubeconfig or os.environ.get("KUBECONFIG")
    if explicit or context or not os.path.exists(_IN_CLUSTER_TOKEN):
        return explicit or os.path.expanduser("~/.kube/config")
    return None


async def open_clients(kubeconfig: str | None, context: str | None) -> KubeClients:
    """From ``kubeconfig`` (or $KUBECONFIG, ~/.kube/config), else the in-cluster service account."""
    configuration = client.Configuration()
    config_file = _kubeconfig_file(kubeconfig, context)
    try:
        if config_file is not None:
            await config.load_kube_config(
                config_file=config_file, context=context, client_configuration=configuration
            )
        else:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except (config.ConfigException, OSError, ValueError, KeyError) as error:
        raise SandboxError(f"cannot load the Kubernetes configuration: {error}") from None
    return KubeClients(
        client.ApiClient(configuration=configuration),
        WsApiClient(configuration=configuration),
    )


def negotiated_protocol(ws: aiohttp.ClientWebSocketResponse) -> str:
    """The subprotocol the API server chose.

    The generated API passes the offer as a plain header, so aiohttp does not
    record the answer in ``ws.protocol``; it is read from the handshake
    response (an aiohttp internal, pinned by tests/unit/test_kubernetes.py).
    """
    response = cast(Any, ws)._response
    chosen = response.headers.get("Sec-WebSocket-Protocol", "") if response is not None else ""
    return str(chosen).strip() or V4_PROTOCOL


async def _websocket(
    what: str, connect: Any, *args: Any, protocols: str, **params: Any
) -> aiohttp.ClientWebSocketResponse:
    """Open a subresource's WebSocket through the generated API, offering ``protocols``.

    The generated stubs type these calls as returning str; with _preload_content=False
    they return aiohttp's pending WebSocket connection.
    """
    with api_errors(what):
        pending = await connect(
            *args,
            **params,
            _preload_content=False,
            _headers={"sec-websocket-protocol": protocols},
        )
        return cast(aiohttp.ClientWebSocketResponse, await pending)


async def open_exec(
    clients: KubeClients,
    namespace: str,
    pod: str,
    container: str,
    argv: Sequence[str],
    *,
    tty: bool,
) -> aiohttp.ClientWebSocketResponse:
    """The exec subresource's WebSocket, offering v5 then v4."""
    core: Any = clients.ws_core
    return await _websocket(
        f"cannot run a process in pod {namespace}/{pod}",
        core.connect_get_namespaced_pod_exec,
        pod,
        namespace,
        protocols=OFFERED_PROTOCOLS,
        command=list(argv),
        container=container,
        stdin=True,
        stdout=True,
        stderr=not tty,
        tty=tty,
    )


async def open_port_forward(
    clients: KubeClients, namespace: str, pod: str, port: int
) -> aiohttp.ClientWebSocketResponse:
    core: Any = clients.ws_core
    return await _websocket(
        f"cannot forward to port {port} of pod {namespace}/{pod}",
        core.connect_get_namespaced_pod_portforward,
        pod,
        namespace,
        protocols=V4_PROTOCOL,
        ports=port,
    )


@contextlib.contextmanager
def api_errors(what: str) -> Iterator[None]:
    """Turn API failures into one line the client can read (no bodies, no tokens)."""
    try:
        yield
    except SandboxError:
        raise
    except ApiException as error:
        raise SandboxError(f"{what}: {_status_text(error.status, error.reason)}") from None
    except aiohttp.WSServerHandshakeError as error:
        raise SandboxError(f"{what}: {_status_text(error.status, error.message)}") from None
    except (aiohttp.ClientError, OSError, TimeoutError) as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise ApiUnavailable(f"the Kubernetes API is unavailable: {reason}") from None


def _status_text(status: int | None, reason: object) -> str:
    if status == 403:
        return "forbidden (the gateway's service account lacks the RBAC rule)"
    if status == 401:
        return "unauthorized (the gateway's credentials were refused)"
    if status == 404:
        return "not found"
    text = " ".join(str(reason or "").split())
    return f"HTTP {status} {text}".strip()
