"""How engine refusals read to the client, in dockerd's and Podman's words."""

from __future__ import annotations

import aiodocker

from sandbox_ssh.providers.docker._client import engine_error


def test_exec_in_a_stopped_container_reads_the_same_on_dockerd_and_podman() -> None:
    dockerd = aiodocker.DockerError(409, "Container 3f2a is not running")
    podman = aiodocker.DockerError(
        500,
        "can only create exec sessions on running containers: container state improper",
    )
    for error in (dockerd, podman):
        assert str(engine_error(error, "the sandbox refused the process")) == (
            "the sandbox is not running"
        )


def test_other_refusals_keep_the_engines_message() -> None:
    error = aiodocker.DockerError(500, "OCI runtime exec failed: boom")
    assert str(engine_error(error, "the sandbox refused the process")) == (
        "the sandbox refused the process: OCI runtime exec failed: boom"
    )
