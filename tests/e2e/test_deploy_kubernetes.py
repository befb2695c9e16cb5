"""deploy/kubernetes/: rendered by the real kubectl, checked field by field against the API schema.

No cluster runs here, and `kubectl apply --dry-run=client` still asks a server for its API
groups, so the manifests are rendered with `kubectl kustomize` and every field of every
object is checked against Kubernetes' own models (kubernetes_asyncio's, generated from
the OpenAPI schema): a misspelt or misplaced key fails.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio import client

from ..support.system import REPO_ROOT, ensure_commands

DEPLOY = REPO_ROOT / "deploy" / "kubernetes"
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


def rendered() -> list[dict[str, Any]]:
    ensure_commands("kubectl")
    output = subprocess.run(
        ["kubectl", "kustomize", str(DEPLOY)], capture_output=True, text=True, check=True
    ).stdout
    return [doc for doc in yaml.safe_load_all(output) if doc]


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
    documents = rendered()
    assert sorted(doc["kind"] for doc in documents) == sorted(MODELS)
    for doc in documents:
        model = MODELS[doc["kind"]]
        assert unknown_fields(doc, model.__name__, doc["kind"]) == []


def test_rbac_allows_exactly_what_the_provider_uses_in_the_sandbox_namespace() -> None:
    documents = {doc["kind"]: doc for doc in rendered()}
    role, binding = documents["Role"], documents["RoleBinding"]
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "sandboxes"
    rules = {
        (tuple(rule["apiGroups"]), resource): sorted(rule["verbs"])
        for rule in role["rules"]
        for resource in rule["resources"]
    }
    assert rules == {
        (("",), "pods"): ["get", "list", "watch"],
        (("",), "pods/exec"): ["create"],
        (("",), "pods/portforward"): ["create"],
    }
    account = documents["ServiceAccount"]["metadata"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["name"], "namespace": account["namespace"]}
    ]


def test_the_deployments_arguments_are_a_valid_configuration(tmp_path: Path) -> None:
    deployment = {doc["kind"]: doc for doc in rendered()}["Deployment"]
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
