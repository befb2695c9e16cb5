"""Driving the real OpenSSH client against a gateway."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path


class SSHClient:
    """Argument lists for ssh/scp/sftp that trust exactly the gateway's host key."""

    def __init__(self, host: str, port: int, host_key_path: Path, workdir: Path) -> None:
        self.host = host
        self.port = port
        workdir.mkdir(parents=True, exist_ok=True)
        public = Path(str(host_key_path) + ".pub").read_text().split()
        self.known_hosts = workdir / "known_hosts"
        name = host if port == 22 else f"[{host}]:{port}"  # how ssh itself looks it up
        self.known_hosts.write_text(f"{name} {public[0]} {public[1]}\n")
        self.options = [
            "-F",
            "/dev/null",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=30",
        ]

    def ssh_argv(self, session_id: str, *args: str, options: Sequence[str] = ()) -> list[str]:
        return [
            "ssh",
            *self.options,
            *options,
            "-p",
            str(self.port),
            f"{session_id}@{self.host}",
            *args,
        ]

    def run(
        self,
        session_id: str,
        *args: str,
        input: bytes | None = None,
        options: Sequence[str] = (),
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            self.ssh_argv(session_id, *args, options=options),
            input=input if input is not None else b"",
            capture_output=True,
            timeout=timeout,
        )

    def popen(
        self, session_id: str, *args: str, options: Sequence[str] = (), **kwargs: object
    ) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.ssh_argv(session_id, *args, options=options), **kwargs)  # type: ignore[call-overload, no-any-return]
