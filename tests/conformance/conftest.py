"""Backends under conformance test. A new provider adds a harness here and must pass the suite."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import pytest

from sandbox_ssh import SandboxProvider
from sandbox_ssh.providers.docker import DockerProvider, ExecPath

from ..support.containers import Containers, docker


class Harness(Protocol):
    """How the suite makes sandboxes and looks inside them for one backend."""

    name: str

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


@pytest.fixture(params=["docker-runtime", "docker-api"])
def harness(request: pytest.FixtureRequest, containers: Containers) -> Iterator[Harness]:
    # Both of Docker's exec paths in every run: they are two backends behind one provider.
    if request.param == "docker-runtime":
        yield DockerHarness(containers, "runtime")
    elif request.param == "docker-api":
        yield DockerHarness(containers, "api")
