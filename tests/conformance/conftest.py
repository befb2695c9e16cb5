"""Backends under conformance test. A new provider adds a harness here and must pass the suite."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import pytest

from sandbox_ssh import SandboxProvider
from sandbox_ssh.providers.broker import BrokerProvider
from sandbox_ssh.providers.docker import DockerProvider, ExecPath
from sandbox_ssh.providers.kubernetes import KubernetesProvider

from ..support.containers import Containers, docker
from ..support.kubernetes import (
    NO_CLUSTER,
    REAL_KUBECONFIG,
    EmulatedApiServer,
    PodMaker,
    real_pods,
)


class Harness(Protocol):
    """How the suite makes sandboxes and looks inside them for one backend."""

    name: str
    stdin_eof: bool  # whether a client's EOF can reach a process at all

    def provider(self) -> SandboxProvider: ...

    def create(self, session_id: str, *, running: bool = True) -> str:
        """Create a sandbox for ``session_id``; returns the runtime's ID for it."""

    def create_unlabelled(self, name: str) -> str: ...

    def processes(self, sandbox_id: str) -> list[str]: ...


@dataclass
class DockerHarness:
    containers: Containers
    exec_path: ExecPath
    name: str = "docker"
    stdin_eof: bool = True

    def provider(self) -> SandboxProvider:
        return DockerProvider(exec_path=self.exec_path)

    def create(self, session_id: str, *, running: bool = True) -> str:
        return self.containers.start(session_id, running=running).id

    def create_unlabelled(self, name: str) -> str:
        return self.containers.start(labelled=False, name=name).id

    def processes(self, sandbox_id: str) -> list[str]:
        out = docker("exec", sandbox_id, "ps", "-eo", "stat=,args=")
        return [
            line.split(None, 1)[1]
            for line in out.splitlines()
            if line.strip() and not line.split()[0].startswith("Z")
        ]


@dataclass
class BrokerHarness(DockerHarness):
    """The Docker provider behind the privileged broker, as `sandbox-ssh serve` runs it as
    root: the provider under test is the front's client of a broker process."""

    brokers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def provider(self) -> SandboxProvider:
        provider, broker = BrokerProvider.spawn(["--exec-path", self.exec_path])
        self.brokers.append(broker)
        return provider

    def close(self) -> None:
        """Every broker ends once its front (the provider) closed its connection."""
        for broker in self.brokers:
            assert broker.wait(30) == 0


@dataclass
class KubernetesHarness:
    pods: PodMaker
    name: str = "kubernetes"
    stdin_eof: bool = True

    def provider(self) -> SandboxProvider:
        return KubernetesProvider(
            namespace=self.pods.namespace, kubeconfig=str(self.pods.kubeconfig_for_gateways)
        )

    def create(self, session_id: str, *, running: bool = True) -> str:
        return self.pods.create(session_id, running=running)[0]

    def create_unlabelled(self, name: str) -> str:
        return self.pods.create(labelled=False, name=name)[0]

    def processes(self, sandbox_id: str) -> list[str]:
        return self.pods.processes(sandbox_id)


@pytest.fixture(
    params=[
        "docker-runtime",
        "docker-api",
        "broker-runtime",
        "broker-api",
        "kubernetes-emulated",
        "kubernetes",
    ]
)
def harness(request: pytest.FixtureRequest, containers: Containers) -> Iterator[Harness]:
    # Both of Docker's exec paths in every run: they are two backends behind one provider,
    # in the same process and behind the broker.
    if request.param == "docker-runtime":
        yield DockerHarness(containers, "runtime")
    elif request.param == "docker-api":
        yield DockerHarness(containers, "api")
    elif request.param.startswith("broker-"):
        exec_path: ExecPath = "runtime" if request.param == "broker-runtime" else "api"
        brokered = BrokerHarness(containers, exec_path, name="broker")
        yield brokered
        brokered.close()
    elif request.param == "kubernetes-emulated":
        # The Kubernetes provider against the emulated API server (tests/support).
        if request.config.getoption("--engine") != "docker":
            pytest.skip("the emulated API server runs on dockerd only")
        server: EmulatedApiServer = request.getfixturevalue("emulated_api_server")
        pods = PodMaker(containers, server.kubeconfig)
        yield KubernetesHarness(pods, "kubernetes-emulated")
    else:
        if not REAL_KUBECONFIG:
            pytest.skip(NO_CLUSTER)
        pods = real_pods(containers)
        try:
            yield KubernetesHarness(pods, stdin_eof=pods.speaks_v5())
        finally:
            pods.remove_all()
