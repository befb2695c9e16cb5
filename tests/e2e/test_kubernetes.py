"""`sandbox-ssh serve --provider kubernetes` driven by the real OpenSSH client.

Each test runs against the emulated API server over dockerd (tests/support; it
answers as Kubernetes 1.30+ does, with v5.channel.k8s.io), and again against a real
cluster when SANDBOX_SSH_TEST_KUBECONFIG is set (skipped otherwise, with that reason):
scripts/test-kubernetes.sh brings up a real Kubernetes 1.20, which offers only v4.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..support.containers import Containers
from ..support.gateway import CliGateway
from ..support.goclient import run_go_client, terminal_sizes
from ..support.kubernetes import (
    NO_CLUSTER,
    NO_STDIN_EOF,
    REAL_KUBECONFIG,
    EmulatedApiServer,
    PodMaker,
    real_pods,
)
from ..support.netclient import (
    STANDIN_SOURCE,
    free_port,
    one_shot_server,
    recv_all,
    recv_line,
)
from ..support.ssh import SSHClient

STANDIN = "/tmp/sandbox-ssh-standin.py"


@dataclass
class Cluster:
    pods: PodMaker
    tmp_path: Path

    def gateway(self, *args: str) -> CliGateway:
        return CliGateway(
            self.tmp_path / "host_key",
            "--provider",
            "kubernetes",
            "--kubeconfig",
            str(self.pods.kubeconfig_for_gateways),
            "--namespace",
            self.pods.namespace,
            *args,
        )

    def client(self, gateway: CliGateway) -> SSHClient:
        return SSHClient(gateway.host, gateway.port, gateway.host_key_path, self.tmp_path / "ssh")


@pytest.fixture(params=["emulated", "cluster"])
def cluster(
    request: pytest.FixtureRequest, containers: Containers, tmp_path: Path, client_tools: None
) -> Iterator[Cluster]:
    if request.param == "cluster":
        if not REAL_KUBECONFIG:
            pytest.skip(NO_CLUSTER)
        pods = real_pods(containers)
    else:
        if request.config.getoption("--engine") != "docker":
            pytest.skip("the emulated API server runs on dockerd only")
        pods = PodMaker(containers, request.getfixturevalue("emulated_api_server").kubeconfig)
    try:
        yield Cluster(pods, tmp_path)
    finally:
        pods.remove_all()


@pytest.fixture
def served(cluster: Cluster) -> Iterator[tuple[CliGateway, SSHClient]]:
    with cluster.gateway() as gateway:
        yield gateway, cluster.client(gateway)


def test_exec_status_streams_stdin_and_the_containers_user(
    cluster: Cluster, served: tuple[CliGateway, SSHClient]
) -> None:
    _, ssh = served
    _, pod = cluster.pods.create(user="1000:1000")
    result = ssh.run(pod.session_id, "echo out; echo err >&2; exit 7")
    assert (result.stdout, result.stderr, result.returncode) == (b"out\n", b"err\n", 7)
    payload = os.urandom(1 << 20)
    # head stops at 1 MiB by itself: v4 (Kubernetes < 1.30) cannot pass the client's EOF on.
    counted = ssh.run(pod.session_id, f"head -c {len(payload)} | sha256sum", input=payload)
    assert counted.stdout.split()[0].decode() == hashlib.sha256(payload).hexdigest()
    who = ssh.run(pod.session_id, 'id -u; echo "$HOME"; pwd; echo "$SSH_CONNECTION"')
    lines = who.stdout.decode().splitlines()
    assert lines[:3] == ["1000", "/home/dev", "/home/dev"], who.stderr
    assert lines[3].startswith("127.0.0.1 ")


def test_client_environment_and_a_missing_command(
    cluster: Cluster, served: tuple[CliGateway, SSHClient]
) -> None:
    _, ssh = served
    _, pod = cluster.pods.create()
    value = "two\nlines and 'quotes' $x"
    env = {**os.environ, "LC_SANDBOX_TEST": value}
    result = subprocess.run(
        ssh.ssh_argv(
            pod.session_id, 'printf "%s" "$LC_SANDBOX_TEST"', options=["-o", "SendEnv=LC_*"]
        ),
        capture_output=True,
        env=env,
        timeout=60,
    )
    assert result.stdout == value.encode(), result.stderr
    missing = ssh.run(pod.session_id, "no-such-command-here")
    assert missing.returncode == 127 and b"no-such-command-here" in missing.stderr


def test_pty_session_size_and_exit_status(
    cluster: Cluster, served: tuple[CliGateway, SSHClient]
) -> None:
    _, ssh = served
    _, pod = cluster.pods.create()
    result = ssh.run(pod.session_id, "tty; stty size; exit 3", options=["-tt"])
    assert result.returncode == 3, result.stderr
    assert re.search(rb"/dev/pts/\d+\r\n\d+ \d+\r\n", result.stdout), result.stdout


@pytest.mark.parametrize("mode", ["back-to-back", "resize-after"])
def test_regression_a_resize_sent_with_the_shell_request_was_lost(
    cluster: Cluster, served: tuple[CliGateway, SSHClient], mode: str
) -> None:
    """Go's x/crypto/ssh: window-change right before or right after the shell request; the
    login step's stty (after the wrapper's resize) put the pty-req's size back."""
    gateway, _ = served
    _, pod = cluster.pods.create()
    result = run_go_client(gateway.host, gateway.port, pod.session_id, mode)
    assert result.returncode == 0, result.stderr
    assert terminal_sizes(result.stdout) == ["100 100"], result.stdout


def test_sftp_and_scp_round_trip(
    cluster: Cluster, served: tuple[CliGateway, SSHClient], tmp_path: Path
) -> None:
    if not cluster.pods.speaks_v5():
        # Found on the real 1.20 cluster: sftp-server and scp -f end on their stdin's EOF,
        # which v4 cannot carry, so both transfers complete and then never end.
        pytest.skip(NO_STDIN_EOF)
    _, ssh = served
    _, pod = cluster.pods.create(user="1000:1000")
    payload = tmp_path / "payload.bin"
    payload.write_bytes(os.urandom(3 << 20))
    batch = f'put "{payload}" up.bin\nget up.bin "{tmp_path}/down.bin"\nls -l up.bin\n'
    sftp = subprocess.run(
        ["sftp", *ssh.options, "-P", str(ssh.port), "-b", "-", f"{pod.session_id}@{ssh.host}"],
        input=batch.encode(),
        capture_output=True,
        timeout=300,
    )
    assert sftp.returncode == 0, sftp.stderr
    assert (tmp_path / "down.bin").read_bytes() == payload.read_bytes()
    assert b"dev" in sftp.stdout  # owned by the container's user
    scp = subprocess.run(
        ["scp", *ssh.options, "-P", str(ssh.port), f"{pod.session_id}@{ssh.host}:up.bin",
         str(tmp_path / "scp.bin")],
        capture_output=True,
        timeout=300,
    )  # fmt: skip
    assert scp.returncode == 0, scp.stderr
    assert (tmp_path / "scp.bin").read_bytes() == payload.read_bytes()


def _start_standin(ssh: SSHClient, session_id: str, *args: str) -> tuple[str, str]:
    """The VS Code server stand-in, copied in over ssh and started; (where, token)."""
    source = STANDIN_SOURCE.read_bytes()  # head ends by itself: v4 passes on no EOF
    copy = ssh.run(session_id, f"head -c {len(source)} > {STANDIN}", input=source)
    assert copy.returncode == 0, copy.stderr
    token = os.urandom(8).hex()
    command = (
        f"nohup python3 {STANDIN} --token {token} {' '.join(args)} > /tmp/standin.out 2>&1 & "
        "while ! grep -q listeningOn /tmp/standin.out; do sleep 0.05; done; cat /tmp/standin.out"
    )
    result = ssh.run(session_id, command)
    match = re.search(rb"listeningOn==(.+)==", result.stdout)
    assert match, result.stdout + result.stderr
    return match.group(1).decode(), token


def test_local_forward_reaches_the_pods_loopback(
    cluster: Cluster, served: tuple[CliGateway, SSHClient], tmp_path: Path
) -> None:
    _, ssh = served
    _, pod = cluster.pods.create()
    port, token = _start_standin(ssh, pod.session_id)
    local = free_port()
    control = ["-o", "ControlMaster=yes", "-o", f"ControlPath={tmp_path / 'ctl'}"]
    up = ssh.run(pod.session_id, options=["-f", "-N", "-L", f"{local}:127.0.0.1:{port}", *control])
    assert up.returncode == 0, up.stderr
    try:
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", local), timeout=30) as conn:
                assert recv_line(conn) == f"token=={token}==\n".encode()
                conn.sendall(b"download 1000000 7\n")
                assert len(recv_all(conn)) == 1000000
    finally:
        ssh.run(pod.session_id, options=["-O", "exit", "-o", f"ControlPath={tmp_path / 'ctl'}"])


def test_unix_socket_and_remote_forwards_through_the_helper(
    cluster: Cluster, served: tuple[CliGateway, SSHClient], tmp_path: Path
) -> None:
    _, ssh = served
    _, pod = cluster.pods.create(user="1000:1000")
    path, token = _start_standin(ssh, pod.session_id, "--unix", "/tmp/ide.sock")
    local = free_port()
    control = ["-o", "ControlMaster=yes", "-o", f"ControlPath={tmp_path / 'ctl'}"]
    up = ssh.run(pod.session_id, options=["-f", "-N", "-L", f"{local}:{path}", *control])
    assert up.returncode == 0, up.stderr
    try:
        with socket.create_connection(("127.0.0.1", local), timeout=30) as conn:
            assert recv_line(conn) == f"token=={token}==\n".encode()
            if cluster.pods.speaks_v5():
                conn.sendall(b"echo\nover a unix socket")
                conn.shutdown(socket.SHUT_WR)  # the helper passes the half-close on
                assert recv_all(conn) == b"over a unix socket"
            else:
                # v4 (found on the real 1.20 cluster): the helper's stdin has no EOF, and the
                # exec stream ends only when the helper does, so neither side's half-close is
                # passed on; a connection ends when the client closes it.
                conn.sendall(b"download 100000 3\n")
                received = b""
                while len(received) < 100000:
                    chunk = conn.recv(65536)
                    assert chunk, f"the connection ended after {len(received)} bytes"
                    received += chunk
    finally:
        ssh.run(pod.session_id, options=["-O", "exit", "-o", f"ControlPath={tmp_path / 'ctl'}"])
    # -R: the command, started right after the forward, reaches the client's side.
    with one_shot_server(b"from the client side\n") as client_port:
        remote = 20000 + client_port % 10000
        probe = (
            'python3 -c \'import socket,sys; s=socket.create_connection(("127.0.0.1", '
            f"{remote})); sys.stdout.write(s.recv(100).decode())'"
        )
        result = ssh.run(pod.session_id, probe, options=["-R", f"{remote}:127.0.0.1:{client_port}"])
    assert result.stdout == b"from the client side\n", result.stderr


def test_agent_forwarding_reaches_the_clients_agent(
    cluster: Cluster, served: tuple[CliGateway, SSHClient], tmp_path: Path
) -> None:
    _, ssh = served
    _, pod = cluster.pods.create(user="1000:1000")
    key = tmp_path / "agent_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    agent = subprocess.run(["ssh-agent", "-s"], capture_output=True, text=True, check=True)
    env = dict(os.environ)
    for name in ("SSH_AUTH_SOCK", "SSH_AGENT_PID"):
        match = re.search(rf"{name}=([^;]+);", agent.stdout)
        assert match, agent.stdout
        env[name] = match.group(1)
    try:
        subprocess.run(["ssh-add", str(key)], env=env, check=True, capture_output=True)
        result = subprocess.run(
            ssh.ssh_argv(pod.session_id, 'ssh-add -l; stat -c %a "$SSH_AUTH_SOCK"', options=["-A"]),
            capture_output=True,
            env=env,
            timeout=60,
        )
        fingerprint = subprocess.run(
            ["ssh-keygen", "-lf", f"{key}.pub"], capture_output=True, text=True, check=True
        ).stdout.split()[1]
        assert fingerprint.encode() in result.stdout, result.stderr
        assert result.stdout.split()[-1] == b"600"
    finally:
        subprocess.run(["ssh-agent", "-k"], env=env, capture_output=True)


def test_a_pending_pod_is_waited_for_with_its_reason_in_the_banner(
    cluster: Cluster, served: tuple[CliGateway, SSHClient]
) -> None:
    _, ssh = served
    sandbox_id, pod = cluster.pods.create(running=False)
    # The emulation's stopped container waits in ContainerCreating; a real pod held
    # unscheduled has no container status yet, and the phase is the reason.
    reason = b"Pending" if cluster.pods.real else b"ContainerCreating"
    client = ssh.popen(
        pod.session_id,
        "echo started",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    banner = b""
    assert client.stderr is not None
    while reason not in banner:
        line = client.stderr.readline()
        assert line, f"no banner; stderr: {banner!r}"
        banner += line
    assert b"starting sandbox " + pod.session_id.encode() + b"... (" + reason + b")" in banner
    cluster.pods.start(sandbox_id)
    out, _ = client.communicate(timeout=60)
    assert out == b"started\n" and client.returncode == 0


def test_refusals_are_one_line(cluster: Cluster, served: tuple[CliGateway, SSHClient]) -> None:
    gateway, ssh = served
    missing = ssh.run("nobody-has-this-session")
    assert missing.returncode == 255
    assert b"no sandbox with this session ID" in missing.stderr
    long_id = "x" * 100  # valid for the gateway, but no label value can hold it
    refused = ssh.run(long_id)
    assert refused.returncode == 255 and b"no sandbox with this session ID" in refused.stderr
    assert "Traceback" not in gateway.log_text()


def test_v4_only_api_server_still_serves_and_says_what_it_cannot_do(
    cluster: Cluster, tmp_path: Path
) -> None:
    if cluster.pods.real:
        if cluster.pods.speaks_v5():
            pytest.skip("needs an API server without v5.channel.k8s.io")
        _, pod = cluster.pods.create()  # Kubernetes 1.20: v4 is all it offers
        with cluster.gateway() as gateway:
            result = cluster.client(gateway).run(pod.session_id, "echo over v4; exit 4")
            assert (result.stdout, result.returncode) == (b"over v4\n", 4), result.stderr
            gateway.wait_for_log(lambda text: "speaks only v4.channel.k8s.io" in text)
        return
    server = EmulatedApiServer.start(tmp_path / "v4", only_v4=True)
    try:
        pods = PodMaker(cluster.pods.containers, server.kubeconfig)
        _, pod = pods.create()
        with Cluster(pods, tmp_path).gateway() as gateway:
            ssh = Cluster(pods, tmp_path).client(gateway)
            result = ssh.run(pod.session_id, "echo over v4; exit 4")
            assert (result.stdout, result.returncode) == (b"over v4\n", 4), result.stderr
            gateway.wait_for_log(lambda text: "speaks only v4.channel.k8s.io" in text)
    finally:
        server.stop()


def test_check_config_shows_the_kubernetes_settings(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sandbox_ssh", "serve",
         "--check-config", "--provider", "kubernetes", "--namespace", "a", "--namespace", "b",
         "--k8s-container", "work", "--host-key", str(tmp_path / "k")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert 'provider = "kubernetes"' in result.stdout
    assert 'namespace = ["a", "b"]' in result.stdout
    assert 'k8s-container = "work"' in result.stdout


def test_a_pending_pod_past_the_ensure_timeout_is_refused_with_its_reason(
    cluster: Cluster,
) -> None:
    _, pod = cluster.pods.create(running=False)
    with cluster.gateway("--ensure-timeout", "1") as gateway:
        result = cluster.client(gateway).run(pod.session_id, "true")
    assert result.returncode == 255
    reason = b"Pending" if cluster.pods.real else b"ContainerCreating"
    assert b"the sandbox did not start within 1s (" + reason + b")" in result.stderr


def test_without_python3_or_socat_helper_forwarding_is_refused_with_the_reason(
    cluster: Cluster, served: tuple[CliGateway, SSHClient]
) -> None:
    _, ssh = served
    sandbox_id, pod = cluster.pods.create()
    cluster.pods.exec(sandbox_id, "sh", "-c", "rm -f /usr/bin/python3* /usr/bin/socat")
    # -W to a name other than localhost goes through the helper (portforward reaches
    # only the pod's loopback); the name resolves inside the pod, and nothing is dialled.
    result = ssh.run(pod.session_id, options=["-W", "ip6-localhost:9"])
    assert result.returncode != 0
    assert b"the sandbox has neither python3 nor socat" in result.stderr, result.stderr
    assert ssh.run(pod.session_id, "echo still here").stdout == b"still here\n"
