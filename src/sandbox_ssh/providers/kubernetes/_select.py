"""Which pod is a session's sandbox, and which of its containers processes run in."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from ...hooks import SandboxError, SandboxStatus

CONTAINER_ANNOTATION = "sandbox-ssh.container"

# A label value (Kubernetes' validation): at most 63 characters, alphanumerics at both ends,
# '-', '_' and '.' between. A session ID that no label can hold names no pod.
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
_LABEL_VALUE_MAX = 63


def can_be_label_value(value: str) -> bool:
    return len(value) <= _LABEL_VALUE_MAX and bool(_LABEL_VALUE.fullmatch(value)) and value != ""


def pod_id(pod: Any) -> str:
    """The sandbox ID of a pod: NAMESPACE/NAME, unique across the namespaces served."""
    return f"{pod.metadata.namespace}/{pod.metadata.name}"


def split_pod_id(sandbox_id: str) -> tuple[str, str]:
    namespace, _, name = sandbox_id.partition("/")
    return namespace, name


def choose_pod(pods: Sequence[Any], label: str, session_id: str) -> Any | None:
    """The one live pod whose label equals the session ID exactly."""
    matches = [
        pod
        for pod in pods
        if (pod.metadata.labels or {}).get(label) == session_id
        and pod.metadata.deletion_timestamp is None  # terminating: on its way out
    ]
    if not matches:
        return None
    if len(matches) > 1:
        names = ", ".join(sorted(pod_id(pod) for pod in matches))
        raise SandboxError(
            f'{len(matches)} pods carry label {label}="{session_id}" ({names}); '
            "a session must have exactly one sandbox"
        )
    return matches[0]


def choose_container(pod: Any, configured: str | None) -> str:
    """``configured``, else the pod's ``sandbox-ssh.container`` annotation, else its first."""
    names = [container.name for container in pod.spec.containers or ()]
    wanted = configured or (pod.metadata.annotations or {}).get(CONTAINER_ANNOTATION)
    if wanted:
        if wanted not in names:
            raise SandboxError(f'the sandbox\'s pod has no container "{wanted}"')
        return str(wanted)
    if not names:
        raise SandboxError("the sandbox's pod has no containers")
    return str(names[0])


def pod_status(pod: Any, container: str) -> SandboxStatus:
    """Running once the target container runs; Pending is startable (waited for)."""
    phase = (pod.status.phase if pod.status else None) or "Pending"
    if phase == "Running":
        for state in (pod.status.container_statuses or ()) if pod.status else ():
            if state.name == container:
                running = state.state is not None and state.state.running is not None
                return SandboxStatus.RUNNING if running else SandboxStatus.STOPPED
        return SandboxStatus.STOPPED
    if phase == "Pending":
        return SandboxStatus.STOPPED
    return SandboxStatus.UNAVAILABLE  # Succeeded, Failed, Unknown: nothing restarts it here


def waiting_reason(pod: Any, container: str) -> str | None:
    """Why the container is not running yet, as kubectl shows it (ContainerCreating, ...)."""
    status = pod.status
    if status is None:
        return None
    for state in status.container_statuses or ():
        if state.name == container and state.state is not None and state.state.waiting:
            return str(state.state.waiting.reason or "") or None
    for condition in status.conditions or ():
        if condition.type == "PodScheduled" and condition.status != "True":
            return str(condition.reason or "Unschedulable")
    return str(status.phase) if status.phase else None
