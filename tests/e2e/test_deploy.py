"""deploy/: the gateway's container image, built here from Debian packages and the wheels."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

from ..support.containers import RUN_LABEL, TEST_LABEL, Container, docker, this_run
from ..support.netclient import free_port
from ..support.ssh import SSHClient
from ..support.system import REPO_ROOT, ensure_commands
from ..support.wait import wait_until

IMAGE = "sandbox-ssh/gateway:test"


def test_the_containerised_gateway_serves_a_session(
    sandbox: Container, tmp_path: Path, client_tools: None
) -> None:
    ensure_commands("debootstrap")
    subprocess.run([str(REPO_ROOT / "scripts" / "build-gateway-image.sh"), IMAGE], check=True)
    port = free_port()
    name = f"sandbox-ssh-gateway-{uuid.uuid4().hex[:8]}"
    state = tmp_path / "state"
    state.mkdir()
    gateway = docker(
        "run", "-d", "--name", name, "--label", f"{TEST_LABEL}=deploy",
        "--label", f"{RUN_LABEL}={this_run()}",
        "--network", "host",  # the SSH port on the host's loopback only
        "-v", "/var/run/docker.sock:/var/run/docker.sock",
        "-v", f"{state}:/var/lib/sandbox-ssh",
        "--pid", "host", "--cap-add", "SYS_ADMIN", "--cap-add", "SYS_PTRACE",
        IMAGE, "serve", "--listen", f"127.0.0.1:{port}", "--exec-path", "api",
    ).strip()  # fmt: skip
    try:
        wait_until(
            lambda: "listening on" in docker("logs", gateway, check=False) + _stderr(gateway)
        )
        key = state / "ssh_host_ed25519_key"  # XDG_STATE_HOME=/var/lib in the image
        ssh = SSHClient("127.0.0.1", port, key, tmp_path / "client")
        result = ssh.run(sandbox.session_id, "echo through the image; id -un")
        assert result.stdout == b"through the image\nroot\n", result.stderr
        # Forwarding works from the container too (--pid host and the two capabilities).
        forwarded = ssh.run(sandbox.session_id, options=["-W", "127.0.0.1:9"])
        assert b"administratively prohibited" not in forwarded.stderr
    finally:
        docker("rm", "-f", gateway, check=False)


def _stderr(container: str) -> str:
    return subprocess.run(["docker", "logs", container], capture_output=True, text=True).stderr
