"""exec and shell channels with the real OpenSSH client, compared with what sshd does."""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import subprocess
from pathlib import Path

from ..support.containers import Container
from ..support.ssh import SSHClient


def test_exit_codes_reach_the_client(ssh: SSHClient, sandbox: Container) -> None:
    for code in (0, 1, 42, 255):
        result = ssh.run(sandbox.session_id, f"exit {code}")
        assert result.returncode == code, result.stderr


def test_stdout_and_stderr_stay_apart(ssh: SSHClient, sandbox: Container) -> None:
    result = ssh.run(sandbox.session_id, "echo to-out; echo to-err >&2; echo more-out")
    assert result.stdout == b"to-out\nmore-out\n"
    assert result.stderr == b"to-err\n"
    assert result.returncode == 0


def test_50mb_random_blob_round_trips_intact(ssh: SSHClient, sandbox: Container) -> None:
    blob = os.urandom(50 * 1024 * 1024)
    result = ssh.run(sandbox.session_id, "cat", input=blob)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout) == len(blob)
    assert hashlib.sha256(result.stdout).digest() == hashlib.sha256(blob).digest()


def test_piped_stdin_reaches_eof(ssh: SSHClient, sandbox: Container) -> None:
    result = ssh.run(sandbox.session_id, "wc -l", input=b"a\nb\n")
    assert result.stdout.strip() == b"2"
    assert result.returncode == 0


def test_output_keeps_flowing_after_stdin_eof(ssh: SSHClient, sandbox: Container) -> None:
    script = "cat; echo after-eof; echo late-err >&2; exit 3"
    result = ssh.run(sandbox.session_id, script, input=b"payload\n")
    assert result.stdout == b"payload\nafter-eof\n"
    assert result.stderr == b"late-err\n"
    assert result.returncode == 3


def test_shell_without_pty_reads_commands_from_stdin(ssh: SSHClient, sandbox: Container) -> None:
    result = ssh.run(sandbox.session_id, input=b"echo hi\n")
    assert result.stdout == b"hi\n"
    assert result.returncode == 0


def test_shell_is_a_login_shell_in_home(ssh: SSHClient, sandbox: Container) -> None:
    result = ssh.run(sandbox.session_id, input=b"shopt -q login_shell && echo login; pwd\n")
    assert result.stdout == b"login\n/root\n"


def test_command_runs_under_the_login_shell(ssh: SSHClient, sandbox: Container) -> None:
    result = ssh.run(sandbox.session_id, 'echo "$BASH_VERSION" | cut -c1; echo $0')
    assert result.stdout.splitlines() == [b"5", b"/bin/bash"]


def test_missing_command_gives_127_and_a_message(ssh: SSHClient, sandbox: Container) -> None:
    result = ssh.run(sandbox.session_id, "no-such-command-here")
    assert result.returncode == 127
    assert b"no-such-command-here" in result.stderr
    assert b"command not found" in result.stderr
    assert result.stdout == b""


def test_twenty_concurrent_connections(ssh: SSHClient, sandbox: Container) -> None:
    session_id = sandbox.session_id

    def one(index: int) -> tuple[int, bytes]:
        result = ssh.run(session_id, f"echo conn-{index}; exit {index % 5}")
        return result.returncode, result.stdout

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        results = list(pool.map(one, range(20)))
    assert results == [(i % 5, f"conn-{i}\n".encode()) for i in range(20)]


def test_many_channels_share_one_connection(
    ssh: SSHClient, sandbox: Container, tmp_path: Path
) -> None:
    mux = ["-o", f"ControlPath={tmp_path / 'control'}"]
    # -f returns only once the master connection is authenticated and listening.
    master = ssh.run(
        sandbox.session_id,
        options=[*mux, "-f", "-N", "-o", "ControlMaster=yes", "-o", "ControlPersist=yes"],
    )
    assert master.returncode == 0, master.stderr
    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(
                pool.map(
                    lambda i: ssh.run(sandbox.session_id, f"echo ch-{i}", options=mux).stdout,
                    range(8),
                )
            )
        assert results == [f"ch-{i}\n".encode() for i in range(8)]
    finally:
        ssh.run(sandbox.session_id, options=[*mux, "-O", "exit"])


def test_keepalive_requests_are_answered(ssh: SSHClient, sandbox: Container) -> None:
    options = ["-o", "ServerAliveInterval=1", "-o", "ServerAliveCountMax=2"]
    result = ssh.run(sandbox.session_id, "sleep 4; echo alive", options=options)
    assert result.stdout == b"alive\n"
    assert result.returncode == 0


def test_unserved_requests_are_refused_without_dropping_the_connection(
    ssh: SSHClient, sandbox: Container
) -> None:
    # -A and -X ask for agent and X11 forwarding, which the gateway refuses.
    options = ["-A", "-X", "-o", "ExitOnForwardFailure=no", "-o", "ForwardX11Trusted=yes"]
    result = ssh.run(
        sandbox.session_id, "echo still-served; echo ${SSH_AUTH_SOCK:-no-agent}", options=options
    )
    assert result.stdout == b"still-served\nno-agent\n"
    assert result.returncode == 0


def test_signals_start_at_their_defaults(ssh: SSHClient, sandbox: Container) -> None:
    # Python ignores SIGPIPE, and ignored signals survive exec: a process started by the
    # gateway must still die of SIGPIPE, as under sshd.
    result = ssh.run(sandbox.session_id, "yes | head -1; echo ${PIPESTATUS[0]}")
    assert result.stdout == b"y\n141\n"
    result = ssh.run(sandbox.session_id, "grep -E '^Sig(Ign|Blk)' /proc/self/status")
    assert result.stdout == b"SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n"


def test_no_gateway_descriptor_reaches_the_sandbox(ssh: SSHClient, sandbox: Container) -> None:
    others = [
        ssh.popen(
            sandbox.session_id,
            "echo up; exec sleep 900",
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(3)
    ]
    try:
        for other in others:
            assert other.stdout is not None and other.stdout.readline() == b"up\n"
        listing = ssh.run(sandbox.session_id, "ls -l /proc/self/fd")
        fds = {
            line.split()[-3]: line.split()[-1] for line in listing.stdout.decode().splitlines()[1:]
        }
        fds = {fd: target for fd, target in fds.items() if not target.startswith("/proc/")}
        assert sorted(fds) == ["0", "1", "2"]
        assert all(target.startswith("pipe:") for target in fds.values())
    finally:
        for other in others:
            other.kill()
            other.wait()
