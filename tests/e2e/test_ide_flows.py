"""VS Code Remote-SSH and JetBrains Gateway, replayed with the OpenSSH client.

VS Code cannot run here, so these tests do what its Remote-SSH extension does
(vscode-remote-release issue logs, Microsoft's remote docs): a long-lived
`ssh -T -D` with no remote command, a shell it types into line by line, an
install script that starts a server bound to the sandbox's 127.0.0.1, and
SOCKS5 connections to that server through the tunnel.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import signal
import socket
import struct
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..support.containers import Container, Containers
from ..support.netclient import (
    STANDIN_PATH,
    connect_when_listening,
    download_digest,
    expected_download_digest,
    free_port,
    install_standin,
    recv_all,
    recv_line,
    socks5_connect,
)
from ..support.ssh import SSHClient
from ..support.system import build_static_binary
from ..support.wait import wait_until


def install_script(marker: str, token: str, listen: str = "") -> str:
    """What the extension pipes into `sh`: start the server, report, then keep the shell alive."""
    return f"""
echo "{marker}: running"
mkdir -p "$HOME/.vscode-server" && chmod 750 "$HOME/.vscode-server"
python3 {STANDIN_PATH} --token {token} --parent-pid $$ {listen} \\
    > "$HOME/.vscode-server/.cli.log" 2>&1 < /dev/null &
CLI_PID=$!
while ! grep -q listeningOn "$HOME/.vscode-server/.cli.log"; do
    kill -0 $CLI_PID || {{ echo "{marker}: server died"; exit 1; }}
    sleep 0.05
done
echo "{marker}: start"
grep -o 'listeningOn==[^=]*==' "$HOME/.vscode-server/.cli.log"
echo "execServerToken=={token}=="
echo "{marker}: end"
while true; do sleep 180; printf ' '; done
"""


@dataclass
class Tunnel:
    process: subprocess.Popen[bytes]
    socks_port: int
    server: str  # port or socket path inside the sandbox
    token: str

    def read_line(self) -> str:
        assert self.process.stdout is not None
        return self.process.stdout.readline().decode()

    def type_line(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()


def read_result_block(tunnel: Tunnel, marker: str) -> tuple[str, str]:
    lines: list[str] = []
    while (line := tunnel.read_line()) and not line.startswith(f"{marker}: end"):
        lines.append(line)
    text = "".join(lines)
    listening = re.search(r"listeningOn==(.+?)==", text)
    token = re.search(r"execServerToken==(.+?)==", text)
    assert listening and token, text
    return listening.group(1), token.group(1)


@pytest.fixture
def vscode_sandbox(containers: Containers) -> Container:
    sandbox = containers.start(user="dev")
    install_standin(sandbox)
    return sandbox


def default_flow(ssh: SSHClient, session_id: str, listen: str = "") -> Tunnel:
    """useLocalServer=true: `ssh -T -D port host` with no command, driven line by line."""
    socks_port = free_port()
    process = ssh.popen(
        session_id,
        options=["-T", "-D", str(socks_port), "-o", "ConnectTimeout=15"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    tunnel = Tunnel(process, socks_port, "", "")
    # Each reply must arrive before the next line is typed: output is not buffered.
    tunnel.type_line("echo ready")
    assert tunnel.read_line() == "ready\n"
    tunnel.type_line("uname -rsv")
    assert tunnel.read_line().startswith("Linux ")
    tunnel.type_line("echo $SHELL")
    assert tunnel.read_line() == "/bin/bash\n"
    tunnel.type_line("sh")
    tunnel.type_line("echo $$")
    assert tunnel.read_line().strip().isdigit()
    marker = str(uuid.uuid4())
    token = uuid.uuid4().hex
    tunnel.type_line(install_script(marker, token, listen))
    tunnel.server, tunnel.token = read_result_block(tunnel, marker)
    assert tunnel.token == token
    return tunnel


@pytest.fixture
def vscode(ssh: SSHClient, vscode_sandbox: Container) -> Iterator[Tunnel]:
    tunnel = default_flow(ssh, vscode_sandbox.session_id)
    yield tunnel
    tunnel.process.kill()
    tunnel.process.wait()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_socks_connect_reaches_the_server_with_its_token(vscode: Tunnel, host: str) -> None:
    with socks5_connect(vscode.socks_port, host, int(vscode.server)) as conn:
        assert recv_line(conn) == f"token=={vscode.token}==\n".encode()


def test_two_long_lived_connections_at_once(vscode: Tunnel) -> None:
    first = socks5_connect(vscode.socks_port, "127.0.0.1", int(vscode.server))
    second = socks5_connect(vscode.socks_port, "127.0.0.1", int(vscode.server))
    with first, second:
        for conn in (first, second):
            assert recv_line(conn) == f"token=={vscode.token}==\n".encode()
            conn.sendall(b"echo\n")
        for round_number in range(20):
            for name, conn in (("first", first), ("second", second)):
                message = f"{name}-{round_number}\n".encode()
                conn.sendall(message)
                assert recv_line(conn) == message


def test_50mb_download_through_the_tunnel(vscode: Tunnel) -> None:
    size = 50 * 1024 * 1024
    with socks5_connect(vscode.socks_port, "127.0.0.1", int(vscode.server)) as conn:
        recv_line(conn)
        assert download_digest(conn, size, seed=11) == expected_download_digest(size, seed=11)


def test_server_goes_away_when_the_client_is_killed(
    ssh: SSHClient, vscode_sandbox: Container
) -> None:
    tunnel = default_flow(ssh, vscode_sandbox.session_id)
    assert any(STANDIN_PATH in p for p in vscode_sandbox.processes())
    tunnel.process.send_signal(signal.SIGKILL)
    tunnel.process.wait()
    wait_until(
        lambda: not any(STANDIN_PATH in p for p in vscode_sandbox.processes()),
        timeout=10,
        message="the IDE server outlived the client",
    )


def test_script_on_stdin_with_immediate_eof_keeps_the_tunnel_up(
    ssh: SSHClient, vscode_sandbox: Container
) -> None:
    """useLocalServer=false: `type script | ssh -T -D port host sh`."""
    socks_port = free_port()
    marker, token = str(uuid.uuid4()), uuid.uuid4().hex
    process = ssh.popen(
        vscode_sandbox.session_id,
        "sh",
        options=["-T", "-D", str(socks_port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdin is not None
    process.stdin.write(install_script(marker, token).encode())
    process.stdin.close()  # immediate EOF, as `type file | ssh` gives
    tunnel = Tunnel(process, socks_port, "", "")
    try:
        server, seen_token = read_result_block(tunnel, marker)
        assert seen_token == token
        started = time.monotonic()
        checks = 0
        while True:  # the requirement is about elapsed time: usable for at least 30 s
            with socks5_connect(socks_port, "127.0.0.1", int(server)) as conn:
                assert recv_line(conn) == f"token=={token}==\n".encode()
            checks += 1
            if time.monotonic() - started > 31:
                break
            time.sleep(5)
        assert process.poll() is None and checks >= 7
    finally:
        process.kill()
        process.wait()


def test_server_on_a_unix_socket_through_local_forward(
    ssh: SSHClient, vscode_sandbox: Container, tmp_path: Path
) -> None:
    """remote.SSH.remoteServerListenOnSocket: `ssh -T -L 127.0.0.1:PORT:/socket/path`."""
    socket_path = f"/tmp/vscode-ssh-remote-server-sock-{uuid.uuid4().hex[:8]}"
    tunnel = default_flow(ssh, vscode_sandbox.session_id, listen=f"--unix {socket_path}")
    try:
        assert tunnel.server == socket_path
        port = free_port()
        forward = ssh.popen(
            vscode_sandbox.session_id,
            options=["-T", "-N", "-L", f"127.0.0.1:{port}:{socket_path}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            with connect_when_listening(port) as conn:
                assert recv_line(conn) == f"token=={tunnel.token}==\n".encode()
        finally:
            forward.kill()
            forward.wait()
    finally:
        tunnel.process.kill()
        tunnel.process.wait()


def test_home_is_writable_and_shell_is_posix(ssh: SSHClient, vscode_sandbox: Container) -> None:
    result = ssh.run(
        vscode_sandbox.session_id,
        input=b'test -d "$HOME" && test -w "$HOME" && '
        b'touch "$HOME/.probe" && echo writable\n"$SHELL" -c \'echo $((6*7))\'\n',
    )
    assert result.stdout == b"writable\n42\n", result.stderr


def test_jetbrains_style_upload_run_and_forward(
    ssh: SSHClient, vscode_sandbox: Container, tmp_path: Path
) -> None:
    """Gateway deploys a binary over SFTP, starts it with exec, and forwards its port."""
    session_id = vscode_sandbox.session_id
    binary = build_static_binary(
        Path(__file__).parent.parent / "support" / "token_server.c", tmp_path / "token-server"
    )
    upload = subprocess.run(
        ["sftp", *ssh.options, "-P", str(ssh.port), "-b", "-", f"{session_id}@{ssh.host}"],
        input=(
            f'mkdir .backend\nput "{binary}" .backend/token-server\n'
            "chmod 755 .backend/token-server\n"
        ).encode(),
        capture_output=True,
        timeout=60,
    )
    assert upload.returncode == 0, upload.stderr
    port, token = free_port(), uuid.uuid4().hex
    started = ssh.run(
        session_id,
        f"nohup ./.backend/token-server {port} {token} > .backend/log 2>&1 & "
        "while ! grep -q listening .backend/log; do sleep 0.05; done; echo up",
    )
    assert started.stdout == b"up\n", started.stderr
    local_port = free_port()
    forward = ssh.popen(
        session_id,
        options=["-N", "-L", f"{local_port}:127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        with connect_when_listening(local_port) as conn:
            assert recv_line(conn) == f"token=={token}==\n".encode()
            conn.sendall(b"ping")
            conn.shutdown(socket.SHUT_WR)
            assert recv_all(conn) == b"ping"
    finally:
        forward.kill()
        forward.wait()


# Zed's remote development, replayed as its source does it (crates/remote/src/transport/
# ssh.rs): one ControlMaster connection; every later command is a new channel on it, run as
# "cd; COMMAND"; the server binary goes up with `sftp -b -`; the proxy is a -T exec with a
# binary length-prefixed stream; terminals are -t execs.

FRAME_ECHO = (
    "import struct, sys\n"
    "read, write = sys.stdin.buffer.read, sys.stdout.buffer.write\n"
    "while True:\n"
    "    head = read(4)\n"
    "    if len(head) < 4:\n"
    "        break\n"
    "    (size,) = struct.unpack('>I', head)\n"
    "    write(head + read(size))\n"
    "    sys.stdout.buffer.flush()\n"
)


def test_zed_remote_flow(ssh: SSHClient, sandbox: Container, tmp_path: Path) -> None:
    control = ["-o", f"ControlPath={tmp_path / 'zed'}"]
    master = ssh.run(
        sandbox.session_id,
        options=[*control, "-f", "-N", "-o", "ControlMaster=yes", "-o", "ControlPersist=no"],
    )
    assert master.returncode == 0, master.stderr
    mux = [*control, "-o", "ControlMaster=no", "-q", "-T"]

    def zed_run(command: str) -> subprocess.CompletedProcess[bytes]:
        return ssh.run(sandbox.session_id, f"cd; {command}", options=mux)

    try:
        assert zed_run('sh -c "echo $SHELL"').stdout == b"/bin/bash\n"
        assert zed_run("uname -sm").stdout.split()[0] == b"Linux"
        started = time.monotonic()
        windows = zed_run("cmd /c ver")  # Zed's Windows probe: must fail, and fast
        assert windows.returncode != 0 and time.monotonic() - started < 5
        binary = tmp_path / "zed-remote-server"
        binary.write_bytes(bytes(range(256)) * 4096)
        upload = subprocess.run(
            ["sftp", *ssh.options, *control, "-P", str(ssh.port), "-b", "-",
             f"{sandbox.session_id}@{ssh.host}"],
            input=f"mkdir .zed_server\nput {binary} .zed_server/zed-remote-server\n".encode(),
            capture_output=True,
        )  # fmt: skip
        assert upload.returncode == 0, upload.stderr
        assert zed_run("sha256sum .zed_server/zed-remote-server").stdout.split()[0].decode() == (
            hashlib.sha256(binary.read_bytes()).hexdigest()
        )
        # The proxy: a -T exec carrying a binary-clean, length-prefixed stream.
        proxy = ssh.popen(
            sandbox.session_id,
            f"cd; python3 -c {shlex.quote(FRAME_ECHO)}",
            options=mux,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert proxy.stdin is not None and proxy.stdout is not None
        frames = [os.urandom(size) for size in (0, 1, 255, 4096, 65536, 200_000)] * 20
        frames.append(b"\r\n\x00\xff\x1b[A\x03\x04")  # what a terminal would have mangled
        for frame in frames:
            proxy.stdin.write(struct.pack(">I", len(frame)) + frame)
            proxy.stdin.flush()
            head = proxy.stdout.read(4)
            assert struct.unpack(">I", head)[0] == len(frame)
            assert proxy.stdout.read(len(frame)) == frame
        proxy.stdin.close()
        assert proxy.wait(20) == 0
        # A terminal: -t exec, as Zed opens one.
        terminal = ssh.run(
            sandbox.session_id,
            "cd; tty; echo $TERM",
            options=[*control, "-o", "ControlMaster=no", "-tt"],
        )
        lines = terminal.stdout.decode().split()
        assert lines[0].startswith("/dev/pts/") and lines[1] != "dumb"
    finally:
        ssh.run(sandbox.session_id, options=[*control, "-O", "exit"])
