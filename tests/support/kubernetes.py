"""Kubernetes for the suites: the emulated API server over dockerd, or a real cluster.

A real cluster is used when SANDBOX_SSH_TEST_KUBECONFIG names its kubeconfig; the
tests then create their pods in SANDBOX_SSH_TEST_NAMESPACE (default
``sandbox-ssh-test``) with kubectl, and delete them afterwards.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .containers import TEST_LABEL, Container, Containers, docker, new_session_id
from .system import REPO_ROOT, ensure_commands

EMULATED_NAMESPACE = "sandboxes"
NAMESPACE_LABEL = "sandbox-ssh.test.namespace"
ANNOTATION_PREFIX = "sandbox-ssh.test.annotation."
REAL_KUBECONFIG = os.environ.get("SANDBOX_SSH_TEST_KUBECONFIG")
REAL_NAMESPACE = os.environ.get("SANDBOX_SSH_TEST_NAMESPACE", "sandbox-ssh-test")
NO_CLUSTER = (
    "no Kubernetes cluster: set SANDBOX_SSH_TEST_KUBECONFIG to a kubeconfig to run this "
    "suite against a real one"
)


def kubeconfig_text(server: str, token: str) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulated", "cluster": {"server": server}}],
            "users": [{"name": "emulated", "user": {"token": token}}],
            "contexts": [
                {"name": "emulated", "context": {"cluster": "emulated", "user": "emulated"}}
            ],
            "current-context": "emulated",
        }
    )


@dataclass
class EmulatedApiServer:
    """``python -m tests.support.apiserver_emulator`` on a loopback port."""

    kubeconfig: Path
    process: subprocess.Popen[bytes]

    @classmethod
    def start(cls, workdir: Path, *, only_v4: bool = False) -> EmulatedApiServer:
        token = secrets.token_hex(16)
        argv = [sys.executable, "-m", "tests.support.apiserver_emulator", "--token", token]
        process = subprocess.Popen(
            [*argv, *(["--only-v4"] if only_v4 else [])],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            env=os.environ.copy(),
        )
        assert process.stdout is not None
        deadline = time.monotonic() + 30
        line = b""
        while not line.startswith(b"listening on "):
            ready, _, _ = select.select([process.stdout], [], [], 1)
            if ready:
                line = process.stdout.readline()
                if not line:
                    raise RuntimeError("the emulated API server exited at start-up")
            if time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("the emulated API server did not start")
        port = int(line.split()[-1])
        workdir.mkdir(parents=True, exist_ok=True)
        kubeconfig = workdir / "kubeconfig"
        kubeconfig.write_text(kubeconfig_text(f"http://127.0.0.1:{port}", token))
        kubeconfig.chmod(0o600)
        return cls(kubeconfig, process)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@dataclass
class PodMaker:
    """Makes sandboxes as pods: containers under the emulation, real pods on a cluster."""

    containers: Containers
    kubeconfig: Path
    real: bool = False
    namespace: str = EMULATED_NAMESPACE
    _pods: list[str] = field(default_factory=list)

    def create(
        self,
        session_id: str | None = None,
        *,
        labelled: bool = True,
        running: bool = True,
        name: str | None = None,
        user: str | None = None,
        annotations: dict[str, str] | None = None,
    ) -> tuple[str, Container]:
        """A pod for ``session_id``: its sandbox ID (NAMESPACE/POD) and a handle on it."""
        session_id = session_id or new_session_id()
        name = name or f"pod-{new_session_id('k')}"
        if self.real:
            return self._create_real(session_id, labelled, name, user, annotations)
        labels = {NAMESPACE_LABEL: self.namespace}
        labels |= {ANNOTATION_PREFIX + k: v for k, v in (annotations or {}).items()}
        container = self.containers.start(
            session_id, labelled=labelled, labels=labels, name=name, user=user, running=running
        )
        return f"{self.namespace}/{name}", container

    def _create_real(
        self,
        session_id: str,
        labelled: bool,
        name: str,
        user: str | None,
        annotations: dict[str, str] | None,
    ) -> tuple[str, Container]:
        image = os.environ.get("SANDBOX_SSH_TEST_IMAGE", "debian:bookworm")
        labels = {TEST_LABEL: "1", **({"sandbox-ssh.session": session_id} if labelled else {})}
        security = {"runAsUser": int(user.split(":")[0])} if user else {}
        manifest = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": labels, "annotations": annotations or {}},
            "spec": {
                "containers": [
                    {
                        "name": "main",
                        "image": image,
                        "command": ["sleep", "infinity"],
                        "securityContext": security,
                    }
                ],
                "terminationGracePeriodSeconds": 0,
            },
        }
        self.kubectl("apply", "-f", "-", input=json.dumps(manifest).encode())
        self.kubectl("wait", "--for=condition=Ready", f"pod/{name}", "--timeout=120s")
        self._pods.append(name)
        return f"{self.namespace}/{name}", Container(id=name, session_id=session_id)

    def kubectl(self, *args: str, input: bytes | None = None) -> str:
        ensure_commands("kubectl")
        result = subprocess.run(
            ["kubectl", "--kubeconfig", str(self.kubeconfig), "-n", self.namespace, *args],
            input=input,
            capture_output=True,
            check=True,
        )
        return result.stdout.decode()

    def exec(self, sandbox_id: str, *argv: str) -> str:
        if self.real:
            return self.kubectl("exec", sandbox_id.split("/", 1)[1], "--", *argv)
        return docker("exec", sandbox_id.split("/", 1)[1], *argv)

    def processes(self, sandbox_id: str) -> list[str]:
        out = self.exec(sandbox_id, "ps", "-eo", "stat=,args=")
        return [
            line.split(None, 1)[1]
            for line in out.splitlines()
            if line.strip() and not line.split()[0].startswith("Z")
        ]

    def remove_all(self) -> None:
        if self._pods:
            self.kubectl("delete", "pod", "--wait=false", *self._pods)
            self._pods.clear()
