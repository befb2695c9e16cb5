"""An EMULATED Kubernetes API server (1.30+: v5.channel.k8s.io) over dockerd.

The only real cluster these machines can build is Kubernetes 1.20
(scripts/test-kubernetes.sh), which speaks v4 alone. What only a newer API server
does, stdin EOF over exec's v5 subprotocol, is therefore tested here and nowhere
else; every pass runs the provider's suites against this stand-in. It serves the few
endpoints the provider uses, the way the API server and kubelet answer them, with
Docker containers standing in for pods:

- ``GET /api/v1/namespaces/NS/pods?labelSelector=K=V&limit=N``: containers with
  label ``sandbox-ssh.test.namespace=NS`` (and K=V), as pods named after the
  container, each with one container ``main``; a stopped container is a Pending pod
  whose container waits with ``ContainerCreating``;
- the ``exec`` subresource over WebSocket, offering ``v5.channel.k8s.io`` (or only
  v4 with ``--only-v4``): a Docker exec as the container's own user, stdout and
  stderr apart, resize, stdin EOF from v5's close message, the exit code as a
  ``metav1.Status`` on channel 3;
- the ``portforward`` subresource: a connection to the pod's loopback (``socat`` in
  the container), with the port prefix on each channel's first message.

It checks a bearer token like an API server and listens on loopback only. It does
not authorise (RBAC) at all: the Role is proven on the real cluster. The suites run
against a real cluster as well when SANDBOX_SSH_TEST_KUBECONFIG is set.

Run: ``python -m tests.support.apiserver_emulator --token T [--only-v4]``; it prints
``listening on PORT`` once ready.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from typing import Any

import aiodocker
from aiohttp import WSMsgType, web

from sandbox_ssh.providers.docker._aiodocker_internals import half_close, open_stream
from sandbox_ssh.providers.docker._process import DETACH_KEYS

NAMESPACE_LABEL = "sandbox-ssh.test.namespace"
ANNOTATION_PREFIX = "sandbox-ssh.test.annotation."
V5, V4 = "v5.channel.k8s.io", "v4.channel.k8s.io"


def status(code: int, message: str, reason: str) -> web.Response:
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "status": "Failure"}
    body |= {"message": message, "reason": reason, "code": code}
    return web.json_response(body, status=code)


def as_pod(container: dict[str, Any], namespace: str) -> dict[str, Any]:
    labels = dict(container.get("Labels") or {})
    annotations = {
        key.removeprefix(ANNOTATION_PREFIX): value
        for key, value in labels.items()
        if key.startswith(ANNOTATION_PREFIX)
    }
    running = container.get("State") == "running"
    state: dict[str, Any] = (
        {"running": {"startedAt": "2026-01-01T00:00:00Z"}}
        if running
        else {"waiting": {"reason": "ContainerCreating"}}
    )
    return {
        "metadata": {
            "name": (container.get("Names") or ["/?"])[0].lstrip("/"),
            "namespace": namespace,
            "uid": container["Id"],
            "labels": labels,
            "annotations": annotations,
        },
        "spec": {"containers": [{"name": "main", "image": container.get("Image", "")}]},
        "status": {
            "phase": "Running" if running else "Pending",
            "containerStatuses": [
                {
                    "name": "main",
                    "image": container.get("Image", ""),
                    "imageID": "",
                    "ready": running,
                    "restartCount": 0,
                    "state": state,
                }
            ],
        },
    }


class Emulator:
    def __init__(self, token: str, only_v4: bool) -> None:
        self.token = token
        self.only_v4 = only_v4
        self.docker = aiodocker.Docker()

    @web.middleware
    async def auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return status(401, "Unauthorized", "Unauthorized")
        response: web.StreamResponse = await handler(request)
        return response

    async def containers(self, namespace: str, selector: str = "") -> list[dict[str, Any]]:
        filters = [f"{NAMESPACE_LABEL}={namespace}"]
        for term in filter(None, selector.split(",")):
            key, _, value = term.replace("==", "=").partition("=")
            filters.append(f"{key}={value}")
        listed = await self.docker.containers.list(all=True, filters={"label": filters})
        return [item._container for item in listed]

    async def list_pods(self, request: web.Request) -> web.Response:
        namespace = request.match_info["namespace"]
        found = await self.containers(namespace, request.query.get("labelSelector", ""))
        limit = int(request.query.get("limit") or 0)
        items = [as_pod(c, namespace) for c in found][: limit or None]
        return web.json_response(
            {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}
        )

    async def pod_container(self, request: web.Request) -> dict[str, Any] | web.Response:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        for container in await self.containers(namespace):
            if (container.get("Names") or [""])[0].lstrip("/") == name:
                if container.get("State") != "running":
                    return status(400, f"pod {name} is not running", "BadRequest")
                return container
        return status(404, f'pods "{name}" not found', "NotFound")

    async def exec(self, request: web.Request) -> web.StreamResponse:
        found = await self.pod_container(request)
        if isinstance(found, web.Response):
            return found
        offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
        chosen = V5 if V5 in offered and not self.only_v4 else V4
        tty = request.query.get("tty", "").lower() in ("1", "t", "true")  # Go's ParseBool
        execution = await self.docker.containers.container(found["Id"]).exec(
            request.query.getall("command"), stdin=True, tty=tty, detach_keys=DETACH_KEYS
        )
        stream = execution.start(detach=False)
        await open_stream(stream)
        ws = web.WebSocketResponse(protocols=[chosen], max_msg_size=0)
        await ws.prepare(request)

        async def from_client() -> None:
            async for message in ws:
                if message.type is not WSMsgType.BINARY or not message.data:
                    continue
                channel, data = message.data[0], message.data[1:]
                if channel == 0 and data:
                    with contextlib.suppress(Exception):
                        await stream.write_in(data)
                elif channel == 255 and chosen == V5 and data[:1] == b"\x00":
                    half_close(stream)
                elif channel == 4 and tty:
                    size = json.loads(data)
                    with contextlib.suppress(aiodocker.DockerError):
                        await execution.resize(h=size["Height"], w=size["Width"])

        reader = asyncio.ensure_future(from_client())
        try:
            while (message := await stream.read_out()) is not None:
                await ws.send_bytes(bytes([1 if tty else message.stream]) + message.data)
            info = await execution.inspect()
            while info.get("Running"):
                info = await execution.inspect()
            code = int(info.get("ExitCode") or 0)
            body: dict[str, Any] = {"metadata": {}, "status": "Success"}
            if code:
                body = {
                    "metadata": {},
                    "status": "Failure",
                    "message": f"command terminated with non-zero exit code: exit code {code}",
                    "reason": "NonZeroExitCode",
                    "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
                }
            await ws.send_bytes(b"\x03" + json.dumps(body).encode())
        except ConnectionError:
            pass
        finally:
            reader.cancel()
            await stream.close()
            await ws.close()
        return ws

    async def portforward(self, request: web.Request) -> web.StreamResponse:
        found = await self.pod_container(request)
        if isinstance(found, web.Response):
            return found
        port = int(request.query["ports"])
        execution = await self.docker.containers.container(found["Id"]).exec(
            ["socat", "-", f"TCP:127.0.0.1:{port}"], stdin=True, tty=False
        )
        stream = execution.start(detach=False)
        await open_stream(stream)
        ws = web.WebSocketResponse(protocols=[V4], max_msg_size=0)
        await ws.prepare(request)
        prefix = port.to_bytes(2, "little")
        await ws.send_bytes(b"\x00" + prefix)
        await ws.send_bytes(b"\x01" + prefix)

        async def from_client() -> None:
            async for message in ws:
                if message.type is WSMsgType.BINARY and message.data[:1] == b"\x00":
                    with contextlib.suppress(Exception):
                        await stream.write_in(message.data[1:])

        reader = asyncio.ensure_future(from_client())
        try:
            while (message := await stream.read_out()) is not None:
                channel = b"\x00" if message.stream == 1 else b"\x01"
                await ws.send_bytes(channel + message.data)
        except ConnectionError:
            pass
        finally:
            reader.cancel()
            await stream.close()
            await ws.close()
        return ws


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--token", required=True)
    parser.add_argument("--only-v4", action="store_true")
    args = parser.parse_args()
    emulator = Emulator(args.token, args.only_v4)
    app = web.Application(middlewares=[emulator.auth])
    pods = "/api/v1/namespaces/{namespace}/pods"
    app.router.add_get(pods, emulator.list_pods)
    for verb in ("get", "post"):
        app.router.add_route(verb.upper(), pods + "/{name}/exec", emulator.exec)
        app.router.add_route(verb.upper(), pods + "/{name}/portforward", emulator.portforward)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(f"listening on {runner.addresses[0][1]}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
