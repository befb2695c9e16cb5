"""sftp, scp (SFTP and legacy modes) and rsync against the sandbox's own sftp-server."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path

import pytest

from ..conftest import Gateway, GatewayFactory
from ..support.containers import Container, Containers, docker
from ..support.ssh import SSHClient
from ..support.wait import wait_until

ODD_NAME = "report final (v2) – café ü.txt"  # noqa: RUF001 - non-ASCII on purpose


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def remote_sha256(ssh: SSHClient, session_id: str, path: str) -> str:
    result = ssh.run(session_id, f"sha256sum {sh_quote(path)}")
    assert result.returncode == 0, result.stderr
    return result.stdout.split()[0].decode()


def sh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, capture_output=True, timeout=300, **kwargs)  # type: ignore[call-overload, no-any-return]


def scp_argv(ssh: SSHClient, *args: str) -> list[str]:
    return ["scp", *ssh.options, "-P", str(ssh.port), *args]


def sftp_batch(
    ssh: SSHClient, session_id: str, commands: str
) -> subprocess.CompletedProcess[bytes]:
    argv = ["sftp", *ssh.options, "-P", str(ssh.port), "-b", "-", f"{session_id}@{ssh.host}"]
    return run(argv, input=commands.encode())


def rsync_argv(ssh: SSHClient, *args: str) -> list[str]:
    transport = " ".join(["ssh", *ssh.options, "-p", str(ssh.port)])
    return ["rsync", "-e", transport, *args]


@pytest.fixture
def dev_sandbox(containers: Containers) -> Container:
    return containers.start(user="dev")


@pytest.fixture
def payload(tmp_path: Path) -> Path:
    path = tmp_path / ODD_NAME
    path.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    return path


def test_sftp_batch_operations_as_the_session_user(
    ssh: SSHClient, dev_sandbox: Container, payload: Path, tmp_path: Path
) -> None:
    session_id = dev_sandbox.session_id
    back = tmp_path / "back.bin"
    result = sftp_batch(
        ssh,
        session_id,
        f"""
mkdir work
cd work
put "{payload}" upload.bin
rename upload.bin renamed.bin
chmod 640 renamed.bin
ls -l
get renamed.bin "{back}"
put "{payload}" scratch.bin
rm scratch.bin
""",
    )
    assert result.returncode == 0, result.stderr
    listed = result.stdout.split(b"sftp> ls -l")[1].split(b"sftp> get")[0]
    assert b"renamed.bin" in listed and b"-rw-r-----" in listed
    assert sha256(back) == sha256(payload)
    listing = dev_sandbox.exec("stat", "-c", "%U %G %a %n", "/home/dev/work/renamed.bin")
    assert listing.strip() == "dev dev 640 /home/dev/work/renamed.bin"
    assert dev_sandbox.exec("ls", "/home/dev/work").split() == ["renamed.bin"]


def test_sftp_keeps_odd_file_names(ssh: SSHClient, dev_sandbox: Container, payload: Path) -> None:
    result = sftp_batch(ssh, dev_sandbox.session_id, f'put "{payload}"\n')
    assert result.returncode == 0, result.stderr
    assert remote_sha256(ssh, dev_sandbox.session_id, f"/home/dev/{ODD_NAME}") == sha256(payload)


@pytest.mark.parametrize("legacy", [False, True], ids=["sftp-mode", "legacy-scp"])
def test_scp_both_directions(
    ssh: SSHClient, dev_sandbox: Container, payload: Path, tmp_path: Path, legacy: bool
) -> None:
    session_id = dev_sandbox.session_id
    mode = ["-O"] if legacy else []
    target = f"{session_id}@{ssh.host}:"
    up = run(scp_argv(ssh, *mode, str(payload), target + "copied.bin"))
    assert up.returncode == 0, up.stderr
    assert remote_sha256(ssh, session_id, "/home/dev/copied.bin") == sha256(payload)
    assert dev_sandbox.exec("stat", "-c", "%U", "/home/dev/copied.bin").strip() == "dev"
    down = run(scp_argv(ssh, *mode, target + "copied.bin", str(tmp_path / "down.bin")))
    assert down.returncode == 0, down.stderr
    assert sha256(tmp_path / "down.bin") == sha256(payload)
    odd = run(scp_argv(ssh, *mode, str(payload), target))
    assert odd.returncode == 0, odd.stderr
    assert remote_sha256(ssh, session_id, f"/home/dev/{ODD_NAME}") == sha256(payload)


def test_scp_many_small_files_recursively(
    ssh: SSHClient, dev_sandbox: Container, tmp_path: Path
) -> None:
    session_id = dev_sandbox.session_id
    tree = tmp_path / "tree"
    for index in range(300):
        sub = tree / f"d{index % 10}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{index}.txt").write_bytes(os.urandom(index * 7))
    result = run(scp_argv(ssh, "-r", str(tree), f"{session_id}@{ssh.host}:"))
    assert result.returncode == 0, result.stderr
    local = run(["sh", "-c", "cd tree && find . -type f -exec sha256sum {} + | sort"], cwd=tmp_path)
    remote = ssh.run(session_id, "cd tree && find . -type f -exec sha256sum {} + | sort")
    assert remote.stdout == local.stdout and local.stdout.count(b"\n") == 300


def test_rsync_full_then_incremental(
    ssh: SSHClient, dev_sandbox: Container, tmp_path: Path
) -> None:
    session_id = dev_sandbox.session_id
    tree = tmp_path / "project"
    for index in range(50):
        (tree / f"pkg{index % 5}").mkdir(parents=True, exist_ok=True)
        (tree / f"pkg{index % 5}" / f"mod{index}.py").write_bytes(os.urandom(2048))
    (tree / ODD_NAME).write_bytes(b"odd name\n")
    destination = f"{session_id}@{ssh.host}:project/"
    first = run(rsync_argv(ssh, "-a", "--stats", f"{tree}/", destination))
    assert first.returncode == 0, first.stderr
    assert b"Number of regular files transferred: 51" in first.stdout
    (tree / "pkg1" / "mod1.py").write_bytes(b"changed\n")
    second = run(rsync_argv(ssh, "-a", "--stats", f"{tree}/", destination))
    assert second.returncode == 0, second.stderr
    assert b"Number of regular files transferred: 1" in second.stdout
    assert ssh.run(session_id, "cat project/pkg1/mod1.py").stdout == b"changed\n"
    back = tmp_path / "back"
    pulled = run(rsync_argv(ssh, "-a", destination, f"{back}/"))
    assert pulled.returncode == 0, pulled.stderr
    assert run(["diff", "-r", str(tree), str(back)]).returncode == 0
    assert dev_sandbox.exec("stat", "-c", "%U", f"/home/dev/project/{ODD_NAME}").strip() == "dev"


def test_200mb_file_both_directions(ssh: SSHClient, sandbox: Container, tmp_path: Path) -> None:
    session_id = sandbox.session_id
    big = tmp_path / "big.bin"
    with big.open("wb") as handle:
        for _ in range(200):
            handle.write(os.urandom(1 << 20))
    up = sftp_batch(ssh, session_id, f'put "{big}" /tmp/big.bin\n')
    assert up.returncode == 0, up.stderr
    assert remote_sha256(ssh, session_id, "/tmp/big.bin") == sha256(big)
    down = run(scp_argv(ssh, f"{session_id}@{ssh.host}:/tmp/big.bin", str(tmp_path / "back.bin")))
    assert down.returncode == 0, down.stderr
    assert sha256(tmp_path / "back.bin") == sha256(big)


def test_sandbox_without_sftp_server_refuses_with_a_reason(
    ssh: SSHClient, containers: Containers, tmp_path: Path
) -> None:
    sandbox = containers.start()
    sandbox.exec("rm", "-f", "/usr/lib/openssh/sftp-server")
    result = sftp_batch(ssh, sandbox.session_id, "ls\n")
    assert result.returncode != 0
    assert b"this sandbox has no sftp-server" in result.stderr
    assert b"subsystem request failed" in result.stderr
    assert b"Traceback" not in result.stderr
    # Nothing else breaks: commands on the same sandbox still run.
    assert ssh.run(sandbox.session_id, "echo still-fine").stdout == b"still-fine\n"


def test_configured_sftp_server_path(
    gateway_factory: GatewayFactory, containers: Containers, tmp_path: Path
) -> None:
    gw: Gateway = gateway_factory(sftp_server_path="/opt/tools/sftp-server")
    sandbox = containers.start()
    sandbox.exec("sh", "-c", "mkdir -p /opt/tools && mv /usr/lib/openssh/sftp-server /opt/tools/")
    result = sftp_batch(gw.client, sandbox.session_id, "pwd\n")
    assert result.returncode == 0, result.stderr
    assert b"/root" in result.stdout


def test_transfers_never_use_the_archive_api(
    ssh: SSHClient, sandbox: Container, payload: Path, tmp_path: Path
) -> None:
    session_id = sandbox.session_id
    since = str(int(time.time()) - 1)
    assert (
        sftp_batch(
            ssh, session_id, f'put "{payload}" /tmp/p\nget /tmp/p "{tmp_path}/q"\n'
        ).returncode
        == 0
    )
    assert run(scp_argv(ssh, str(payload), f"{session_id}@{ssh.host}:/tmp/r")).returncode == 0
    # An exec of our own through the engine marks the end: once its event is listed, every
    # event of the transfers is too (the engine may write its events log a little late).
    sandbox.exec("true")

    def container_actions() -> list[str] | None:
        until = str(int(time.time()) + 1)
        # Matched here rather than with --filter container=ID, which Podman ignores for
        # short IDs.
        events = docker(
            "events", "--since", since, "--until", until, "--format", "{{.Actor.ID}} {{.Action}}"
        ).splitlines()
        found = [
            line.split(" ", 1)[1]
            for line in events
            if " " in line
            and line.split(" ", 1)[0]
            and sandbox.id.startswith(line.split(" ", 1)[0])
        ]
        return found if any(a.startswith("exec") for a in found) else None

    actions = wait_until(container_actions, timeout=30, message="the engine listed no exec event")
    assert actions, "docker events recorded nothing; the check would be vacuous"
    assert not [a for a in actions if "archive" in a or "extract" in a], actions
