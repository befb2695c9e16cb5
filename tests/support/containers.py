"""Test sandboxes: labelled, on no network, and always removed."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

TEST_LABEL = "sandbox-ssh.test"
SESSION_LABEL = "sandbox-ssh.session"
# Which test run started a container: "PID.STARTTIME" of the run's first process. Runs, and
# the pytest-xdist workers of one run, share a dockerd; a run only ever removes its own
# containers, and those of runs whose process is gone.
RUN_LABEL = "sandbox-ssh.test.run"
_RUN_VARIABLE = "SANDBOX_SSH_TEST_RUN"
# Extra `docker create` arguments the engine under test needs (set by conftest): rootful
# Podman's default rlimits exceed what root may set without CAP_SYS_RESOURCE, so its
# containers fail to start ("error setting rlimit type 7") unless the limits are given.
ENGINE_CREATE_ARGS: list[str] = []


def docker(*args: str, check: bool = True, input: bytes | None = None) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, check=False, input=input)
    if check and result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} failed: {result.stderr.decode().strip()}")
    return result.stdout.decode()


def _process_identity(pid: int) -> str | None:
    """``PID.STARTTIME``, which no later process with the same PID has."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            started = stat.read(4096).rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError, UnicodeDecodeError):
        return None
    return f"{pid}.{started}"


def this_run() -> str:
    """This test run's identity; pytest-xdist's workers inherit the controller's (conftest)."""
    run = os.environ.get(_RUN_VARIABLE)
    if not run:
        run = os.environ[_RUN_VARIABLE] = _process_identity(os.getpid()) or uuid.uuid4().hex
    return run


def run_is_alive(run: str) -> bool:
    pid, _, _ = run.partition(".")
    return pid.isdigit() and _process_identity(int(pid)) == run


def new_session_id(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@dataclass
class Container:
    id: str
    session_id: str  # the session label's value, or the name tried on an unlabelled one

    def exec(self, *argv: str, user: str = "0:0", check: bool = True) -> str:
        return docker("exec", "-u", user, self.id, *argv, check=check)

    def processes(self) -> list[str]:
        """Command lines of every live process (zombies excluded)."""
        out = self.exec("ps", "-eo", "stat=,args=")
        return [
            line.split(None, 1)[1]
            for line in out.splitlines()
            if line.strip() and not line.split()[0].startswith("Z")
        ]

    def state(self) -> dict[str, object]:
        info: list[dict[str, dict[str, object]]] = json.loads(docker("inspect", self.id))
        return info[0]["State"]

    def stop(self) -> None:
        docker("stop", "-t", "0", self.id)


class Containers:
    """Starts test containers and removes every one of them at the end."""

    def __init__(self, image: str, run_label: str) -> None:
        self.image = image
        self.run_label = run_label
        self._started: list[str] = []

    def start(
        self,
        session_id: str | None = None,
        *,
        labelled: bool = True,
        labels: dict[str, str] | None = None,
        name: str | None = None,
        user: str | None = None,
        running: bool = True,
        extra: Sequence[str] = (),
        command: Sequence[str] = ("sleep", "infinity"),
    ) -> Container:
        session_id = session_id or new_session_id()
        args = [
            "create",
            "--init",
            "--network",
            "none",
            "--label",
            f"{TEST_LABEL}={self.run_label}",
            "--label",
            f"{RUN_LABEL}={this_run()}",
        ]
        if labelled:
            args += ["--label", f"{SESSION_LABEL}={session_id}"]
        for key, value in (labels or {}).items():
            args += ["--label", f"{key}={value}"]
        if name:
            args += ["--name", name]
        if user:
            args += ["--user", user]
        args += ENGINE_CREATE_ARGS
        container_id = docker(*args, *extra, self.image, *command).strip()
        self._started.append(container_id)
        if running:
            docker("start", container_id)
        return Container(id=container_id, session_id=session_id)

    def remove_all(self) -> None:
        if self._started:
            docker("rm", "-f", *self._started, check=False)
            self._started.clear()


def remove_stale_test_containers() -> None:
    """Remove test containers left by runs that are over (killed, say); never a live run's."""
    listed = docker(
        "ps",
        "-a",
        "--filter",
        f"label={TEST_LABEL}",
        "--format",
        '{{.ID}} {{.Label "' + RUN_LABEL + '"}}',
    )
    stale = [
        fields[0]
        for fields in (line.split() for line in listed.splitlines())
        if fields and (len(fields) < 2 or not run_is_alive(fields[1]))
    ]
    if stale:
        docker("rm", "-f", *stale, check=False)
