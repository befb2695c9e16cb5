"""The Docker provider: sandboxes are containers labelled with their session ID."""

from ._provider import DEFAULT_LABEL, EXEC_PATHS, DockerProvider, ExecPath

__all__ = ["DEFAULT_LABEL", "EXEC_PATHS", "DockerProvider", "ExecPath"]
