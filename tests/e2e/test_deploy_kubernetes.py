"""deploy/kubernetes/: checked against the API schema, and applied to a real cluster.

Without a cluster, `kubectl apply --dry-run=client` still asks a server for its API
groups, so the manifests are rendered with `kubectl kustomize` and every field of every
object is checked against Kubernetes' own models (kubernetes_asyncio's, generated from
the OpenAPI schema): a misspelt or misplaced key fails. With one
(SANDBOX_SSH_TEST_KUBECONFIG, see scripts/test-kubernetes.sh) the manifests are applied,
a session reaches a pod through the Service, and the Role is shown minimal: taking any
rule away breaks the feature the test names.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from sandbox_ssh.providers.kubernetes._provider import AUTHORIZED_KEYS_ANNOTATION as AUTHORIZED_KEYS

from ..support.containers import Containers
from ..support.gateway import CliGateway, serve_once
from ..support.kubernetes import (
    GATEWAY_NAMESPACE,
    NO_CLUSTER,
    REAL_KUBECONFIG,
    Deployed,
    PodMaker,
    deployed_on_real_cluster,
    kubectl_at,
    real_pods,
    rendered_manifests,
)
from ..support.ssh import SSHClient
from ..support.wait import wait_until

MODELS = {
    "Namespace": client.V1Namespace,
    "ServiceAccount": client.V1ServiceAccount,
    "Role": client.V1Role,
    "RoleBinding": client.V1RoleBinding,
    "Deployment": client.V1Deployment,
    "Service": client.V1Service,
}
# Fields whose schema type is IntOrString or Quantity (free-form in the models).
_FREE_FORM = ("object", "str")


def unknown_fields(value: Any, type_name: str, where: str) -> list[str]:
    """Paths in ``value`` that the model ``type_name`` does not have."""
    if type_name.startswith("list["):
        inner = type_name[5:-1]
        return [
            f for i, item in enumerate(value) for f in unknown_fields(item, inner, f"{where}[{i}]")
        ]
    if type_name.startswith("dict("):
        return []
    model = getattr(client, type_name, None)
    if model is None or type_name in _FREE_FORM:
        return []
    if not isinstance(value, dict):
        return [f"{where}: expected an object ({type_name})"]
    by_json = {json_name: attr for attr, json_name in model.attribute_map.items()}
    problems = []
    for key, item in value.items():
        if key not in by_json:
            problems.append(f"{where}.{key}")
            continue
        problems += unknown_fields(item, model.openapi_types[by_json[key]], f"{where}.{key}")
    return problems


def test_every_field_of_every_object_is_in_the_api_schema() -> None:
    # Not vacuous: a misspelt key deep in a pod template is found.
    typo = {"spec": {"template": {"spec": {"containers": [{"name": "x", "imagePullPolcy": "x"}]}}}}
    assert unknown_fields(typo, "V1Deployment", "D") == [
        "D.spec.template.spec.containers[0].imagePullPolcy"
    ]
    documents = rendered_manifests()
    assert sorted(doc["kind"] for doc in documents) == sorted(MODELS)
    for doc in documents:
        model = MODELS[doc["kind"]]
        assert unknown_fields(doc, model.__name__, doc["kind"]) == []


def test_rbac_allows_exactly_what_the_provider_uses_in_the_sandbox_namespace() -> None:
    documents = {doc["kind"]: doc for doc in rendered_manifests()}
    role, binding = documents["Role"], documents["RoleBinding"]
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "sandboxes"
    rules = {
        (tuple(rule["apiGroups"]), resource): sorted(rule["verbs"])
        for rule in role["rules"]
        for resource in rule["resources"]
    }
    assert rules == {
        (("",), "pods"): ["list"],
        (("",), "pods/exec"): ["create", "get"],
        (("",), "pods/portforward"): ["create", "get"],
    }
    account = documents["ServiceAccount"]["metadata"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["name"], "namespace": account["namespace"]}
    ]


def test_the_deployments_arguments_are_a_valid_configuration(tmp_path: Path) -> None:
    deployment = {doc["kind"]: doc for doc in rendered_manifests()}["Deployment"]
    spec = deployment["spec"]["template"]["spec"]
    gateway = spec["containers"][0]
    assert deployment["spec"]["replicas"] >= 2
    args = [a for a in gateway["args"] if not a.startswith("--host-key=")]
    assert "--namespace=sandboxes" in args and "--provider=kubernetes" in args
    key = tmp_path / "host_key"  # the Secret's key, mounted at /keys in the pod
    result = subprocess.run(
        [sys.executable, "-m", "sandbox_ssh", *args, "--host-key", str(key), "--check-config"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    metrics_port = next(a for a in args if a.startswith("--metrics-listen=")).rsplit(":", 1)[1]
    ports = {p["name"]: str(p["containerPort"]) for p in gateway["ports"]}
    assert ports["metrics"] == metrics_port
    assert gateway["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    # Every replica presents the same host key, copied to a 0600 file it alone can read.
    assert "--host-key=/keys/ssh_host_ed25519_key" in gateway["args"]
    init = spec["initContainers"][0]
    assert "install -m 0600" in " ".join(init["command"])
    secret = next(v for v in spec["volumes"] if "secret" in v)["secret"]
    assert secret["secretName"] == "sandbox-ssh-host-key"


# deploy/kubernetes/ on a real cluster (scripts/test-kubernetes.sh; skipped without one).


@pytest.fixture
def deployed(containers: Containers, client_tools: None) -> Iterator[tuple[Deployed, PodMaker]]:
    if not REAL_KUBECONFIG:
        pytest.skip(NO_CLUSTER)
    pods = real_pods(containers)
    deployed = deployed_on_real_cluster()
    try:
        yield deployed, pods
    finally:
        pods.remove_all()
        deployed.set_role_rules(deployed.role["rules"])


def _client_key(tmp_path: Path) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    key = tmp_path / "client_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key


def test_a_session_reaches_a_sandbox_through_the_deployments_service(
    deployed: tuple[Deployed, PodMaker], tmp_path: Path
) -> None:
    cluster, pods = deployed
    service_ip = kubectl_at(
        cluster.admin,
        "-n",
        GATEWAY_NAMESPACE,
        "get",
        "service",
        "sandbox-ssh",
        "-o",
        "jsonpath={.spec.clusterIP}",
    )
    service_port = 22
    key = _client_key(tmp_path)
    public = Path(f"{key}.pub").read_text().strip()
    _, pod = pods.create(user="1000:1000", annotations={AUTHORIZED_KEYS: public})
    ssh = SSHClient(service_ip, service_port, cluster.host_key, tmp_path / "ssh")
    identity = ["-i", str(key), "-o", "IdentitiesOnly=yes"]
    result = ssh.run(pod.session_id, "echo out; echo err >&2; id -u; exit 5", options=identity)
    assert (result.stdout, result.stderr, result.returncode) == (b"out\n1000\n", b"err\n", 5)
    # A key the pod does not list is refused by the replica, whichever one answers.
    stranger = _client_key(tmp_path / "stranger")
    refused = ssh.run(
        pod.session_id, "true", options=["-i", str(stranger), "-o", "IdentitiesOnly=yes"]
    )
    assert refused.returncode == 255 and b"Permission denied" in refused.stderr
    # The gateway's own pods: no host network, and every replica Ready.
    replicas = json.loads(
        kubectl_at(cluster.admin, "-n", GATEWAY_NAMESPACE, "get", "pods", "-o", "json")
    )["items"]
    assert len(replicas) == 2
    for replica in replicas:
        assert not replica["spec"].get("hostNetwork", False)
        ready = {c["type"]: c["status"] for c in replica["status"]["conditions"]}["Ready"]
        assert ready == "True", replica["metadata"]["name"]


def _forwarded_greeting(ssh: SSHClient, session_id: str, port: int) -> bytes:
    """What a server on the pod's loopback says through `ssh -W 127.0.0.1:port` (portforward)."""
    result = ssh.run(session_id, options=["-W", f"127.0.0.1:{port}"], timeout=60)
    return result.stdout if result.returncode == 0 else b"refused: " + result.stderr


def test_the_role_is_minimal_each_rule_carries_a_named_feature(
    deployed: tuple[Deployed, PodMaker], tmp_path: Path
) -> None:
    cluster, pods = deployed
    sandbox_id, pod = pods.create()
    port = 4711
    pods.exec(
        sandbox_id,
        "sh",
        "-c",
        f"nohup socat TCP-LISTEN:{port},bind=127.0.0.1,fork "
        "SYSTEM:'echo hello from the pod' >/dev/null 2>&1 &",
    )
    rules = cluster.role["rules"]
    as_the_service_account = [
        *("--provider", "kubernetes", "--namespace", cluster.sandbox_namespace),
        *("--kubeconfig", str(cluster.gateway_kubeconfig)),
    ]

    def gateway() -> CliGateway:
        return CliGateway(tmp_path / "host_key", *as_the_service_account)

    def without(resource: str, verb: str | None = None) -> list[dict[str, Any]]:
        kept = []
        for rule in rules:
            if resource in rule["resources"]:
                verbs = [v for v in rule["verbs"] if verb is not None and v != verb]
                if verbs:
                    kept.append({**rule, "verbs": verbs})
            else:
                kept.append(rule)
        return kept

    # With the Role as shipped: exec and forwarding both work.
    with gateway() as served:
        ssh = SSHClient(served.host, served.port, served.host_key_path, tmp_path / "ssh")
        assert ssh.run(pod.session_id, "echo exec").stdout == b"exec\n"
        greeting = b"hello from the pod\n"
        wait_until(lambda: _forwarded_greeting(ssh, pod.session_id, port) == greeting or None, 60)

    # Rule 1, list pods: finding a session's pod. Without it the gateway does not start.
    cluster.set_role_rules(without("pods"))
    result = serve_once(
        *as_the_service_account, "--host-key", str(tmp_path / "host_key"), "--listen", "127.0.0.1:0"
    )
    assert result.returncode != 0
    assert f"cannot list pods in namespace {cluster.sandbox_namespace}" in result.stderr
    assert "Traceback" not in result.stderr

    # Rule 2, pods/exec: every session channel (shell, exec, sftp). Rule 3, pods/portforward:
    # -L/-W to the pod's loopback. Each removal breaks its feature and only that one.
    for resource, verb in [
        ("pods/exec", None),
        ("pods/exec", "get"),
        ("pods/portforward", None),
        ("pods/portforward", "get"),
    ]:
        cluster.set_role_rules(without(resource, verb))
        with gateway() as served:
            ssh = SSHClient(served.host, served.port, served.host_key_path, tmp_path / "ssh")
            ran = ssh.run(pod.session_id, "echo exec")
            forwarded = _forwarded_greeting(ssh, pod.session_id, port)
        if resource == "pods/exec":
            assert ran.returncode != 0 and b"cannot run a process in pod" in ran.stderr, ran
            assert b"forbidden" in ran.stderr.lower()
        else:
            assert ran.stdout == b"exec\n", ran.stderr
            assert forwarded.startswith(b"refused: "), forwarded
            assert b"forbidden" in forwarded.lower(), forwarded
    # "create" alone is not used on this 1.20 API server; Kubernetes 1.35 requires it too.
    for resource in ("pods/exec", "pods/portforward"):
        cluster.set_role_rules(without(resource, "create"))
        with gateway() as served:
            ssh = SSHClient(served.host, served.port, served.host_key_path, tmp_path / "ssh")
            assert ssh.run(pod.session_id, "echo exec").stdout == b"exec\n"
            assert _forwarded_greeting(ssh, pod.session_id, port) == b"hello from the pod\n"
