"""Kubernetes for the suites: the emulated API server over dockerd, or a real cluster.

A real cluster is used when SANDBOX_SSH_TEST_KUBECONFIG names an admin's kubeconfig
(scripts/test-kubernetes.sh brings one up): deploy/kubernetes/ is applied to it once,
the tests create their pods with kubectl in the namespace of its Role, and the
gateways under test authenticate as its ServiceAccount, so every test also proves the
Role sufficient.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .containers import TEST_LABEL, Container, Containers, docker, new_session_id
from .system import REPO_ROOT, SANDBOX_IMAGE, ensure_commands
from .wait import wait_until

EMULATED_NAMESPACE = "sandboxes"
HOLDING_SCHEDULER = "sandbox-ssh-test-hold"
NO_STDIN_EOF = "v4.channel.k8s.io has no stdin EOF (Kubernetes before 1.30)"
NAMESPACE_LABEL = "sandbox-ssh.test.namespace"
ANNOTATION_PREFIX = "sandbox-ssh.test.annotation."
REAL_KUBECONFIG = os.environ.get("SANDBOX_SSH_TEST_KUBECONFIG")
NO_CLUSTER = (
    "no Kubernetes cluster: scripts/test-kubernetes.sh runs this against a real one "
    "(or set SANDBOX_SSH_TEST_KUBECONFIG to an admin's kubeconfig)"
)


def kubeconfig_text(cluster: dict[str, Any], token: str) -> str:
    """A kubeconfig for ``cluster`` (its server, and CA data if any) with a bearer token."""
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "test", "cluster": cluster}],
            "users": [{"name": "test", "user": {"token": token}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
            "current-context": "test",
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
        kubeconfig.write_text(kubeconfig_text({"server": f"http://127.0.0.1:{port}"}, token))
        kubeconfig.chmod(0o644)  # the fronts of serve read it as their own user
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
    gateway_kubeconfig: Path | None = None  # what gateways use, when not ``kubeconfig``
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
            return self._create_real(session_id, labelled, name, user, annotations, running)
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
        running: bool,
    ) -> tuple[str, Container]:
        # No registry is reachable: the image is the one scripts/kubernetes/cluster.sh imported.
        image = os.environ.get("SANDBOX_SSH_TEST_IMAGE", SANDBOX_IMAGE)
        labels = {TEST_LABEL: "1", **({"sandbox-ssh.session": session_id} if labelled else {})}
        security: dict[str, int] = {}
        if user:
            uid, _, gid = user.partition(":")
            security = {"runAsUser": int(uid), **({"runAsGroup": int(gid)} if gid else {})}
        manifest = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": labels, "annotations": annotations or {}},
            "spec": {
                "containers": [
                    {
                        "name": "main",
                        "image": image,
                        "imagePullPolicy": "Never",
                        "command": ["sleep", "infinity"],
                        "securityContext": security,
                    }
                ],
                "terminationGracePeriodSeconds": 0,
                "automountServiceAccountToken": False,
                # A pod held in Pending names a scheduler that does not exist; start() binds
                # it to the node as a scheduler would.
                **({} if running else {"schedulerName": HOLDING_SCHEDULER}),
            },
        }
        self.kubectl("apply", "-f", "-", input=json.dumps(manifest).encode())
        self._pods.append(name)
        if running:
            self.kubectl("wait", "--for=condition=Ready", f"pod/{name}", "--timeout=120s")
        return f"{self.namespace}/{name}", Container(id=name, session_id=session_id)

    def speaks_v5(self) -> bool:
        """Whether exec offers v5.channel.k8s.io (stdin EOF): on by default from 1.30."""
        if not self.real:
            return True
        version = json.loads(self.kubectl("get", "--raw", "/version"))
        return (int(version["major"]), int(version["minor"].rstrip("+"))) >= (1, 30)

    def start(self, sandbox_id: str) -> None:
        """Let a pod made with ``running=False`` start."""
        pod = sandbox_id.split("/", 1)[1]
        if not self.real:
            docker("start", pod)
            return
        node = self.kubectl("get", "nodes", "-o", "jsonpath={.items[0].metadata.name}")
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": pod},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        }
        self.kubectl("create", "-f", "-", input=json.dumps(binding).encode())

    def kubectl(self, *args: str, input: bytes | None = None) -> str:
        return kubectl_at(self.kubeconfig, "-n", self.namespace, *args, input=input)

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

    @property
    def kubeconfig_for_gateways(self) -> Path:
        return self.gateway_kubeconfig or self.kubeconfig


DEPLOY_DIR = REPO_ROOT / "deploy" / "kubernetes"
GATEWAY_NAMESPACE = "sandbox-ssh"
# Arguments of deploy/kubernetes/deployment.yaml that name the platform's own services,
# which do not exist here: without them keys come from the pod's annotation.
PLATFORM_ARGS = ("--authorized-keys-url=", "--track-url=")


def kubectl_at(kubeconfig: Path, *args: str, input: bytes | None = None) -> str:
    ensure_commands("kubectl")
    result = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), *args],
        input=input,
        capture_output=True,
        timeout=300,
    )
    if result.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr.decode().strip()}")
    return result.stdout.decode()


def rendered_manifests() -> list[dict[str, Any]]:
    """deploy/kubernetes/ as `kubectl kustomize` renders it."""
    ensure_commands("kubectl")
    output = subprocess.run(
        ["kubectl", "kustomize", str(DEPLOY_DIR)], capture_output=True, text=True, check=True
    ).stdout
    return [doc for doc in yaml.safe_load_all(output) if doc]


@dataclass
class Deployed:
    """deploy/kubernetes/ applied to a real cluster: its Role and its running Deployment."""

    admin: Path
    gateway_kubeconfig: Path  # the gateway's ServiceAccount: it has the Role, nothing more
    host_key: Path
    role: dict[str, Any]
    rules: list[dict[str, Any]] = field(init=False)  # as now applied

    def __post_init__(self) -> None:
        self.rules = self.role["rules"]

    @property
    def sandbox_namespace(self) -> str:
        return str(self.role["metadata"]["namespace"])

    def set_role_rules(self, rules: list[dict[str, Any]]) -> None:
        """Replace the Role's rules, and wait until the API server authorises by them."""
        before = {(r, v) for rule in self.rules for r in rule["resources"] for v in rule["verbs"]}
        after = {(r, v) for rule in rules for r in rule["resources"] for v in rule["verbs"]}
        role = {**self.role, "rules": rules}
        kubectl_at(self.admin, "apply", "-f", "-", input=json.dumps(role).encode())
        self.rules = rules
        account = f"system:serviceaccount:{GATEWAY_NAMESPACE}:sandbox-ssh"
        for resource, verb in sorted(before ^ after):  # only what changed
            wanted = "yes" if (resource, verb) in after else "no"

            def in_force(resource: str = resource, verb: str = verb, wanted: str = wanted) -> bool:
                kind, _, subresource = resource.partition("/")  # "pods/exec" would name a pod
                answer = subprocess.run(
                    ["kubectl", "--kubeconfig", str(self.admin), "auth", "can-i", verb, kind,
                     f"--subresource={subresource}", "-n", self.sandbox_namespace, "--as", account],
                    capture_output=True, text=True, timeout=60,
                )  # fmt: skip
                return answer.stdout.strip() == wanted

            wait_until(in_force, 30, f"the Role's change to {verb} {resource} took no effect")


_deployed: Deployed | None = None
_deploy_failure: str | None = None


def deployed_on_real_cluster() -> Deployed:
    """Apply deploy/kubernetes/ to the cluster once per run, as its README says.

    The host-key Secret is made first, the platform's URLs are dropped from the
    arguments, and the Deployment must roll out: every replica Ready through its
    /readyz probe, which lists pods with the ServiceAccount's Role.
    """
    global _deployed, _deploy_failure
    if _deployed is not None:
        return _deployed
    if _deploy_failure is not None:
        raise RuntimeError(f"deploy/kubernetes/ could not be applied: {_deploy_failure}")
    assert REAL_KUBECONFIG, NO_CLUSTER
    workdir = Path(tempfile.gettempdir()) / "sandbox-ssh-k8s-deploy"
    try:
        _deployed = _deploy(Path(REAL_KUBECONFIG), workdir)
    except Exception as error:
        _deploy_failure = str(error)
        raise
    return _deployed


def _deploy(admin: Path, workdir: Path) -> Deployed:
    documents = rendered_manifests()
    by_kind = {doc["kind"]: doc for doc in documents}
    gateway = by_kind["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    gateway["args"] = [a for a in gateway["args"] if not a.startswith(PLATFORM_ARGS)]
    role = by_kind["Role"]
    sandbox_namespace = role["metadata"]["namespace"]
    namespaces = [
        by_kind["Namespace"],
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": sandbox_namespace}},
    ]
    for namespace in namespaces:
        kubectl_at(admin, "apply", "-f", "-", input=json.dumps(namespace).encode())
    workdir.mkdir(parents=True, exist_ok=True)
    host_key = workdir / "ssh_host_ed25519_key"
    if not host_key.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True
        )
    secret = kubectl_at(
        admin,
        "-n",
        GATEWAY_NAMESPACE,
        "create",
        "secret",
        "generic",
        "sandbox-ssh-host-key",
        f"--from-file=ssh_host_ed25519_key={host_key}",
        f"--from-file=ssh_host_ed25519_key.pub={host_key}.pub",
        "--dry-run=client",
        "-o",
        "json",
    )
    kubectl_at(admin, "apply", "-f", "-", input=secret.encode())
    rest = [doc for doc in documents if doc["kind"] != "Namespace"]
    kubectl_at(
        admin,
        "apply",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": rest}).encode(),
    )
    kubectl_at(
        admin,
        "-n",
        GATEWAY_NAMESPACE,
        "rollout",
        "status",
        "deployment/sandbox-ssh",
        "--timeout=240s",
    )
    token = kubectl_at(
        admin, "-n", GATEWAY_NAMESPACE, "create", "token", "sandbox-ssh", "--duration=4h"
    ).strip()
    server_config = json.loads(kubectl_at(admin, "config", "view", "--raw", "-o", "json"))
    cluster = server_config["clusters"][0]["cluster"]
    gateway_kubeconfig = workdir / "gateway.kubeconfig"
    gateway_kubeconfig.write_text(kubeconfig_text(cluster, token))
    gateway_kubeconfig.chmod(0o644)  # the fronts of serve read it as their own user
    return Deployed(admin, gateway_kubeconfig, host_key, role)


def real_pods(containers: Containers) -> PodMaker:
    """Pods on the real cluster, in the Role's namespace, served as its ServiceAccount."""
    deployed = deployed_on_real_cluster()
    return PodMaker(
        containers,
        deployed.admin,
        real=True,
        namespace=deployed.sandbox_namespace,
        gateway_kubeconfig=deployed.gateway_kubeconfig,
    )
