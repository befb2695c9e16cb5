"""Sandboxes as Kubernetes pods (``pip install sandbox-ssh[kubernetes]``)."""

from ._provider import DEFAULT_LABEL, KubernetesProvider

__all__ = ["DEFAULT_LABEL", "KubernetesProvider"]
