"""Installing what the tests need, and starting dockerd when none runs."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
# Bumped whenever the image's package list changes.
SANDBOX_IMAGE = "sandbox-ssh/sandbox:bookworm-2"
_APT_UPDATED = False

# Debian package that provides each command the suite runs.
_PACKAGE_FOR = {
    "dockerd": "docker.io",
    "docker": "docker.io",
    "debootstrap": "debootstrap",
    "ssh": "openssh-client",
    "scp": "openssh-client",
    "sftp": "openssh-client",
    "ssh-keygen": "openssh-client",
    "rsync": "rsync",
    "socat": "socat",
    "gcc": "gcc",
    "plink": "putty-tools",
    "pscp": "putty-tools",
    "psftp": "putty-tools",
    "puttygen": "putty-tools",
    "dbclient": "dropbear-bin",
    "dropbearconvert": "dropbear-bin",
    "rclone": "rclone",
    "curl": "curl",
    "git": "git",
    "sshfs": "sshfs",
    "fusermount3": "fuse3",
    "node": "nodejs",
    "npm": "npm",
    "podman": "podman",
    "kubectl": "kubernetes-client",
    "go": "golang-go",
    "catatonit": "catatonit",  # podman run --init
    "nc.openbsd": "netcat-openbsd",  # the netcat of OpenSSH's regress scripts
}

# Where the suite's own Podman API service listens (podman system service).
PODMAN_SOCKET = Path("/run/sandbox-ssh-test-podman/podman.sock")


@contextlib.contextmanager
def machine_wide(name: str) -> Iterator[None]:
    """Held by one process of the machine at a time: the pytest-xdist workers of a run (and
    other runs) install packages, start dockerd and build images one after another, and
    whoever comes second finds the work done."""
    lock_dir = Path("/run/lock")
    lock_dir.mkdir(parents=True, exist_ok=True)
    # The scripts take the same locks with flock(1) (apt: scripts/_setup.sh).
    with open(lock_dir / f"sandbox-ssh-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def apt_install(*packages: str) -> None:
    global _APT_UPDATED
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with machine_wide("apt"):
        if not _APT_UPDATED:
            subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
            _APT_UPDATED = True
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", *packages],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
        )


def ensure_commands(*commands: str) -> None:
    missing = sorted({_PACKAGE_FOR[c] for c in commands if shutil.which(c) is None})
    if missing:
        apt_install(*missing)


def _docker_answers() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def ensure_dockerd(timeout: float = 90.0) -> None:
    """Use the running engine, or install and start one that outlives the test run."""
    ensure_commands("docker", "dockerd")
    if _docker_answers():
        return
    with machine_wide("dockerd"):
        if _docker_answers():
            return  # another worker started it meanwhile
        log = open("/var/log/sandbox-ssh-test-dockerd.log", "ab")  # noqa: SIM115
        subprocess.Popen(["dockerd"], stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not _docker_answers():
            if time.monotonic() > deadline:
                raise RuntimeError(
                    "dockerd did not become ready; see /var/log/sandbox-ssh-test-dockerd.log"
                )
            time.sleep(0.2)  # polling readiness of a daemon we started, not synchronising tests


def _podman_answers(env: dict[str, str]) -> bool:
    return subprocess.run(["docker", "info"], capture_output=True, env=env).returncode == 0


def ensure_podman(timeout: float = 90.0) -> str:
    """Start Podman's Docker-compatible API service (rootful) and return its DOCKER_HOST."""
    ensure_commands("docker", "podman", "catatonit")
    docker_host = f"unix://{PODMAN_SOCKET}"
    env = {**os.environ, "DOCKER_HOST": docker_host}
    if _podman_answers(env):
        return docker_host
    with machine_wide("podman"):
        if _podman_answers(env):
            return docker_host  # another worker started it meanwhile
        PODMAN_SOCKET.parent.mkdir(parents=True, exist_ok=True)
        log = open("/var/log/sandbox-ssh-test-podman.log", "ab")  # noqa: SIM115
        subprocess.Popen(
            ["podman", "system", "service", "--time=0", docker_host],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not _podman_answers(env):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    "podman system service did not answer; see /var/log/sandbox-ssh-test-podman.log"
                )
            time.sleep(0.2)  # polling readiness of a service we started, not synchronising tests
    return docker_host


def ensure_sandbox_image() -> str:
    """Built once per machine (cached by tag): the first worker builds, the others wait."""
    ensure_commands("debootstrap")
    with machine_wide("sandbox-image"):
        subprocess.run(
            [str(REPO_ROOT / "scripts" / "build-sandbox-image.sh"), SANDBOX_IMAGE], check=True
        )
    return SANDBOX_IMAGE


def build_static_binary(source: Path, output: Path) -> Path:
    """Compile a test helper as a static binary, so it runs in any Linux sandbox."""
    ensure_commands("gcc")
    if not list(Path("/usr/lib").glob("*/libc.a")):
        apt_install("libc6-dev")
    subprocess.run(["gcc", "-static", "-O2", "-o", str(output), str(source)], check=True)
    return output
