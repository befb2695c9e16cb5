"""The Go SSH client (tests/support/go_ssh_client), built once per machine from Debian's Go and
golang.org/x/crypto 0.4, the library under Terraform, Packer, Gitea and DevPod."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from pathlib import Path

from .system import apt_install, ensure_commands, machine_wide

SOURCE = Path(__file__).with_name("go_ssh_client") / "main.go"
_CACHE = Path.home() / ".cache" / "sandbox-ssh-tests"
_CRYPTO = Path("/usr/share/gocode/src/golang.org/x/crypto/ssh")


def go_ssh_client() -> Path:
    """The built client; rebuilt when its source changes."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    binary = _CACHE / f"go-ssh-client-{digest}"
    with machine_wide("go-ssh-client"):
        if binary.exists():
            return binary
        ensure_commands("go")
        if not _CRYPTO.is_dir():
            apt_install("golang-golang-x-crypto-dev")
        _CACHE.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "GOPATH": "/usr/share/gocode",  # Debian's packaged Go sources, no module download
            "GO111MODULE": "off",
            "GOFLAGS": "",
            "GOCACHE": str(_CACHE / "go-build"),
            "CGO_ENABLED": "0",
        }
        subprocess.run(
            ["go", "build", "-o", f"{binary}.tmp", str(SOURCE)], check=True, env=env, timeout=600
        )
        os.replace(f"{binary}.tmp", binary)
    return binary


def terminal_sizes(output: str) -> list[str]:
    """The ``stty size`` answers in a shell's output (lines of two numbers)."""
    return [line.strip() for line in output.splitlines() if re.fullmatch(r"\d+ \d+", line.strip())]


def run_go_client(host: str, port: int, user: str, *mode: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(go_ssh_client()), host, str(port), user, *mode],
        capture_output=True,
        text=True,
        timeout=60,
    )
