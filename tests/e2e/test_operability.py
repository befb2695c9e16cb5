"""What an operator relies on: metrics, health, logs, configuration, restarts, runtime faults."""

from __future__ import annotations

import hashlib
import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..support.containers import Container, Containers, docker
from ..support.gateway import CliGateway, LoopThread, serve_once
from ..support.hookserver import TOKEN, HookServer
from ..support.netclient import free_port
from ..support.ssh import SSHClient
from ..support.system import ensure_commands, ensure_dockerd
from ..support.wait import wait_until

METRICS = re.compile(r"metrics and health on \S+:(\d+)")


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except urllib.error.URLError:
        return 0, ""  # nothing listens (yet)


def metrics_port(gateway: CliGateway) -> int:
    text = gateway.wait_for_log(lambda log: METRICS.search(log) is not None)
    match = METRICS.search(text)
    assert match is not None
    return int(match.group(1))


def client_for(gateway: CliGateway, tmp_path: Path) -> SSHClient:
    return SSHClient(gateway.host, gateway.port, gateway.host_key_path, tmp_path / "client")


def sample(metrics: str, name: str, **labels: str) -> float:
    """The value of one series in Prometheus' text format (0 when absent)."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in metrics.splitlines():
        if line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        if series == (f"{name}{{{wanted}}}" if labels else name):
            return float(value)
    return 0.0


def test_metrics_count_what_happened_with_bounded_labels(
    tmp_path: Path, sandbox: Container, client_tools: None
) -> None:
    args = ["--metrics-listen", "127.0.0.1:0"]
    with CliGateway(tmp_path / "host_key", *args) as gateway:
        port = metrics_port(gateway)
        ssh = client_for(gateway, tmp_path)
        assert ssh.run(sandbox.session_id, "echo hi").stdout == b"hi\n"
        assert ssh.run(sandbox.session_id, "true", options=["-tt"]).returncode == 0
        assert ssh.run("no-such-session", "true").returncode == 255
        target = f"{sandbox.session_id}@127.0.0.1"
        batch = subprocess.run(
            ["sftp", *ssh.options, "-P", str(ssh.port), "-b", "-", target],
            input=b"ls /\n",
            capture_output=True,
        )
        assert batch.returncode == 0
        status, text = http_get(port, "/metrics")
        assert status == 200
        wait_until(
            lambda: sample(http_get(port, "/metrics")[1], "sandbox_ssh_connections_open") == 0
        )
        text = http_get(port, "/metrics")[1]
        assert sample(text, "sandbox_ssh_connections_total", outcome="closed") >= 3
        assert sample(text, "sandbox_ssh_connections_total", outcome="refused") == 1
        for kind in ("exec", "pty", "sftp"):
            assert sample(text, "sandbox_ssh_channels_total", kind=kind) >= 1, kind
        assert sample(text, "sandbox_ssh_auth_total", method="none", result="success") >= 3
        assert sample(text, "sandbox_ssh_bytes_total", direction="in") > 0
        assert sample(text, "sandbox_ssh_hook_seconds_count", hook="ensure") >= 3
        assert sample(text, "sandbox_ssh_hook_seconds_count", hook="user") >= 3
        for call in ("find", "start_process", "first_byte"):
            assert sample(text, "sandbox_ssh_provider_seconds_count", call=call) >= 1, call
        assert sample(text, "sandbox_ssh_processes") == 0
        # No session ID, address or user ever becomes a label.
        for secretish in (sandbox.session_id, "no-such-session", "127.0.0.1", "root"):
            assert secretish not in text
        assert http_get(port, "/healthz") == (200, "ok\n")
        assert http_get(port, "/readyz") == (200, "ready\n")


def test_workers_report_together(tmp_path: Path, sandbox: Container, client_tools: None) -> None:
    metrics = free_port()
    args = ["--workers", "2", "--listen", f"127.0.0.1:{free_port()}"]
    args += ["--metrics-listen", f"127.0.0.1:{metrics}"]
    gateway = CliGateway(tmp_path / "host_key", *args)
    try:
        ssh = client_for(gateway, tmp_path)
        for _ in range(6):
            assert ssh.run(sandbox.session_id, "true").returncode == 0
        # Whichever worker answers the scrape, the count is both workers' sum.

        def closed() -> float:
            text = http_get(metrics, "/metrics")[1]
            return sample(text, "sandbox_ssh_connections_total", outcome="closed")

        wait_until(lambda: all(closed() == 6 for _ in range(4)))
    finally:
        assert gateway.terminate() == 0


def test_json_logs_carry_the_facts_and_no_secret(
    tmp_path: Path, containers: Containers, loop_thread: LoopThread, client_tools: None
) -> None:
    hooks = HookServer(loop_thread)
    loop_thread.run(hooks.start())
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    sandbox = containers.start()
    audit = tmp_path / "audit.jsonl"
    try:
        for log_format in ("json", "text"):
            args = ["--log-format", log_format, "--env-url", hooks.url("env")]
            args += ["--hook-token-file", str(token_file), "--audit-log", str(audit)]
            with CliGateway(tmp_path / "host_key", *args) as gateway:
                ssh = client_for(gateway, tmp_path)
                result = ssh.run(
                    sandbox.session_id,
                    'echo "$PLATFORM_TOKEN $CLIENT_SECRET"',
                    options=["-o", "SetEnv=CLIENT_SECRET=client-s3cret-value"],
                )
                # Delivered to the process...
                assert result.stdout == b"from-hook client-s3cret-value\n"
                gateway.wait_for_log(lambda text: "connection closed" in text)
                logged = gateway.log_text()
            # ...and written nowhere.
            for secret in ("from-hook", "client-s3cret-value", TOKEN):
                assert secret not in logged and secret not in audit.read_text(), secret
            if log_format == "json":
                entries = [json.loads(line) for line in logged.splitlines() if line.strip()]
                opened = next(e for e in entries if e.get("event") == "connection.open")
                closed = next(e for e in entries if e.get("event") == "connection.close")
                assert opened["session"] == sandbox.session_id and opened["user"] == "root"
                assert opened["remote"].startswith("127.0.0.1:") and opened["sandbox"]
                assert closed["connection"] == opened["connection"]
                assert closed["outcome"] == "closed" and closed["duration"] >= 0
                of_connection = [e for e in entries if e.get("session") == sandbox.session_id]
                assert {e["connection"] for e in of_connection} == {opened["connection"]}
            else:
                assert re.search(r"connection opened: .* conn=[0-9a-f]{16}", logged)
    finally:
        assert hooks.runner is not None
        loop_thread.run(hooks.runner.cleanup())


def test_sigterm_drains_while_a_new_instance_takes_the_port(
    tmp_path: Path, sandbox: Container, client_tools: None
) -> None:
    port = free_port()
    key = tmp_path / "host_key"
    a = CliGateway(key, "--listen", f"127.0.0.1:{port}", "--drain-timeout", "2m")
    ssh = client_for(a, tmp_path)
    sandbox.exec("sh", "-c", "head -c 300000000 /dev/urandom > /tmp/big.bin")
    expected = sandbox.exec("sha256sum", "/tmp/big.bin").split()[0]
    shell = ssh.popen(
        sandbox.session_id,
        options=["-tt"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert shell.stdin is not None and shell.stdout is not None

    def type_and_read(line: str, marker: bytes) -> None:
        assert shell.stdin is not None and shell.stdout is not None
        shell.stdin.write(line.encode() + b"\n")
        shell.stdin.flush()
        while marker not in shell.stdout.readline():
            pass

    type_and_read("echo before-$((20+1))", b"before-21")
    download = subprocess.Popen(
        ["sftp", *ssh.options, "-P", str(port), "-b", "-", f"{sandbox.session_id}@127.0.0.1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert download.stdin is not None
    download.stdin.write(f"get /tmp/big.bin {tmp_path}/big.bin\n".encode())
    download.stdin.close()
    b = CliGateway(key, "--listen", f"127.0.0.1:{port}")
    try:
        a.process.send_signal(signal.SIGTERM)
        a.wait_for_log(lambda text: "draining" in text)
        # New connections reach B, and work.
        for _ in range(5):
            assert ssh.run(sandbox.session_id, "echo new").stdout == b"new\n"
        assert b.log_text().count("connection opened") >= 5
        # A's interactive session and transfer go on, intact.
        type_and_read("echo after-$((20+2))", b"after-22")
        assert download.wait(120) == 0, download.stderr.read() if download.stderr else ""
        got = hashlib.sha256((tmp_path / "big.bin").read_bytes()).hexdigest()
        assert got == expected
        assert a.process.poll() is None  # still draining: the shell is open
        type_and_read("exit", b"")
        shell.wait(20)
        # A exits by itself once its last connection ended.
        assert a.process.wait(30) == 0
    finally:
        shell.kill()
        download.kill()
        a.terminate(signal.SIGINT)
        assert b.terminate() == 0


def test_ssh_config_block_works_with_the_real_client(
    tmp_path: Path, sandbox: Container, client_tools: None
) -> None:
    with CliGateway(tmp_path / "state" / "host_key") as gateway:
        printed = subprocess.run(
            [sys.executable, "-m", "sandbox_ssh", "ssh-config", sandbox.session_id,
             "--host", "127.0.0.1", "--port", str(gateway.port), "--alias", "my-sandbox",
             "--host-key", str(gateway.host_key_path)],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert f"User {sandbox.session_id}" in printed
        config = tmp_path / "ssh_config"
        config.write_text(printed)
        strict = ["-o", "BatchMode=yes", "-o", "UserKnownHostsFile=/dev/null"]
        result = subprocess.run(
            ["ssh", "-F", str(config), *strict, "my-sandbox", "echo via the block"],
            capture_output=True,
        )
        assert result.stdout == b"via the block\n", result.stderr
        # The block really pins the key: another key for the same address is refused.
        other = tmp_path / "other_key"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True
        )
        forged = printed.replace(
            Path(f"{gateway.host_key_path}.pub").read_text().split()[1],
            Path(f"{other}.pub").read_text().split()[1],
        )
        config.write_text(forged)
        refused = subprocess.run(
            ["ssh", "-F", str(config), *strict, "my-sandbox", "true"], capture_output=True
        )
        assert (
            refused.returncode == 255
            and b"REMOTE HOST IDENTIFICATION HAS CHANGED" in refused.stderr
        )


def test_an_engine_that_does_not_answer_is_a_warning_and_a_reason(
    tmp_path: Path, client_tools: None
) -> None:
    args = ["--docker-host", f"unix://{tmp_path}/no-docker.sock", "--metrics-listen", "127.0.0.1:0"]
    with CliGateway(tmp_path / "host_key", *args, "--exec-path", "auto") as gateway:
        log = gateway.wait_for_log(lambda text: "does not answer" in text)
        assert "sessions are refused until it does" in log
        status, body = http_get(metrics_port(gateway), "/readyz")
        assert status == 503 and "the sandbox runtime is unavailable" in body
        result = client_for(gateway, tmp_path).run("any-session", "true")
        assert result.returncode == 255
        assert b"the sandbox runtime is unavailable" in result.stderr


def test_an_engine_too_old_stops_start_up(tmp_path: Path) -> None:
    # A stand-in for an old Docker Engine: it only answers /version (API 1.24, Docker 1.12).
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c",
         "import http.server, json\n"
         "class H(http.server.BaseHTTPRequestHandler):\n"
         "    def do_GET(self):\n"
         "        body = json.dumps({'ApiVersion': '1.24', 'Version': '1.12.6'}).encode()\n"
         "        self.send_response(200); self.send_header('Content-Type', 'application/json')\n"
         "        self.send_header('Content-Length', str(len(body))); self.end_headers()\n"
         "        self.wfile.write(body)\n"
         f"http.server.HTTPServer(('127.0.0.1', {port}), H).serve_forever()\n"],
    )  # fmt: skip
    try:
        wait_until(lambda: http_get(port, "/version")[0] == 200)
        result = serve_once(
            "--host-key", str(tmp_path / "key"), "--listen", "127.0.0.1:0",
            "--docker-host", f"tcp://127.0.0.1:{port}", "--exec-path", "api",
        )  # fmt: skip
        assert result.returncode == 1
        assert result.stderr.strip().splitlines()[-1] == (
            f"Error: the Docker Engine at tcp://127.0.0.1:{port} speaks API 1.24; sandbox-ssh "
            "needs 1.40 or newer (Docker 19.03 or later)"
        )
    finally:
        server.kill()
        server.wait()


def test_a_socket_without_permission_is_a_warning_that_says_so(
    tmp_path: Path, client_tools: None
) -> None:
    # A Docker socket only another user may open, and the gateway as root without the
    # capability that overrides file permissions: the kernel says EACCES, as to a non-root
    # gateway outside the docker group.
    ensure_commands("socat")
    socket_path = tmp_path / "docker.sock"
    bridge = subprocess.Popen(
        ["socat", f"UNIX-LISTEN:{socket_path},mode=600,user=65534,fork",
         "UNIX-CONNECT:/var/run/docker.sock"],
    )  # fmt: skip
    try:
        wait_until(socket_path.exists)
        drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]
        process = subprocess.Popen(
            [*drop, sys.executable, "-m", "sandbox_ssh", "serve", "--listen", "127.0.0.1:0",
             "--host-key", str(tmp_path / "key"), "--exec-path", "api",
             "--docker-host", f"unix://{socket_path}"],
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert process.stderr is not None
            lines: list[str] = []
            while not any("listening on" in line for line in lines):
                line = process.stderr.readline()
                assert line, "".join(lines)
                lines.append(line)
            warning = "".join(lines)
            assert "does not answer" in warning and "permission denied" in warning.lower()
            assert "run it as root, or in the docker group" in warning
        finally:
            process.terminate()
            process.wait(20)
    finally:
        bridge.kill()
        bridge.wait()


def _dockerd_gone() -> bool:
    return subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True).returncode != 0


@pytest.fixture
def restores_dockerd() -> Iterator[None]:
    yield
    # Whatever happened, the next test has an engine (once a stopping one has gone).
    wait_until(lambda: _dockerd_gone() or subprocess.run(["docker", "info"]).returncode == 0)
    ensure_dockerd()


@pytest.mark.serial  # stops the engine every other test uses
def test_dockerd_stop_and_start_under_a_running_gateway(
    tmp_path: Path, containers: Containers, restores_dockerd: None, client_tools: None
) -> None:
    sandbox = containers.start()
    with CliGateway(tmp_path / "host_key", "--metrics-listen", "127.0.0.1:0") as gateway:
        port = metrics_port(gateway)
        ssh = client_for(gateway, tmp_path)
        live = ssh.popen(
            sandbox.session_id,
            "echo up; cat",
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert live.stdout is not None and live.stdout.readline() == b"up\n"
        assert http_get(port, "/readyz")[0] == 200
        subprocess.run(["pkill", "-TERM", "-x", "dockerd"], check=True)
        wait_until(_dockerd_gone, timeout=60)  # it answers some calls while it shuts down
        # The live session ends, with its status (the container was killed: exit-signal on
        # the runtime path, 137 on the API path): no hang.
        assert live.wait(60) in (137, 255)
        status, body = http_get(port, "/readyz")
        assert status == 503 and "the sandbox runtime is unavailable" in body
        refused = ssh.run(sandbox.session_id, "true")
        assert refused.returncode == 255
        assert b"the sandbox runtime is unavailable" in refused.stderr
        # The engine comes back: so does the gateway, without a restart.
        ensure_dockerd()
        docker("start", sandbox.id)
        wait_until(lambda: http_get(port, "/readyz")[0] == 200, timeout=30)
        assert ssh.run(sandbox.session_id, "echo back").stdout == b"back\n"


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT])
def test_a_second_sigterm_or_sigint_stops_at_once(
    tmp_path: Path, sandbox: Container, client_tools: None, second: signal.Signals
) -> None:
    gateway = CliGateway(tmp_path / "host_key", "--drain-timeout", "1h")
    ssh = client_for(gateway, tmp_path)
    live = ssh.popen(
        sandbox.session_id, "echo up; sleep 3600", stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert live.stdout is not None and live.stdout.readline() == b"up\n"
    gateway.process.send_signal(signal.SIGTERM)
    gateway.wait_for_log(lambda text: "draining" in text)
    assert gateway.process.poll() is None and live.poll() is None  # draining, for an hour
    started = time.monotonic()
    assert gateway.terminate(second) == 0
    assert time.monotonic() - started < 15
    assert live.wait(15) == 255  # hung up, as when sshd is killed
    wait_until(lambda: "sleep 3600" not in sandbox.processes())


def test_regression_json_logs_had_raw_warning_lines(
    tmp_path: Path, sandbox: Container, client_tools: None
) -> None:
    """cryptography's deprecation warnings (asyncssh imports DSA) were printed raw on stderr.

    With the versions installed here, every line `serve --log-format json` writes, from
    start-up through a session to a SIGTERM drain, is one JSON object.
    """
    gateway = CliGateway(tmp_path / "host_key", "--log-format", "json")
    ssh = client_for(gateway, tmp_path)
    assert ssh.run(sandbox.session_id, "echo hi").stdout == b"hi\n"
    gateway.wait_for_log(lambda text: "connection.close" in text)
    assert gateway.terminate() == 0
    lines = [line for line in gateway.log_text().splitlines() if line.strip()]
    entries = []
    for line in lines:
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"a stderr line is not JSON: {line!r}")
    messages = " ".join(str(entry.get("message")) for entry in entries)
    assert "listening on" in messages and "draining" in messages
    # Warnings, where the installed versions raise any, arrive as log entries too.
    assert all(
        entry["logger"] == "py.warnings" for entry in entries if "Warning" in entry["message"]
    )
