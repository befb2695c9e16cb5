"""The Docker provider: sandboxes are containers labelled with their session ID."""

from ._provider import DEFAULT_LABEL, DockerProvider

__all__ = ["DEFAULT_LABEL", "DockerProvider"]
