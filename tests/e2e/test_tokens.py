"""Short-lived access tokens, certificates with a TTL, and --max-connection-age.

Each client a platform's users have: OpenSSH (token as password through SSH_ASKPASS, by
keyboard-interactive, and as SESSION#TOKEN in the username), PuTTY's plink -pw, and
paramiko. Every refusal is one line, and no token reaches the gateway's log or audit log.
"""

from __future__ import annotations

import base64
import os
import secrets
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pytest

from sandbox_ssh._session.tokens import mint_token

from ..support.containers import Containers
from ..support.gateway import CliGateway
from ..support.hookserver import TOKEN as HOOK_TOKEN
from ..support.hookserver import HookServer
from ..support.system import ensure_commands

# Authentication and quotas happen before any process starts: the API path adds nothing.
pytestmark = pytest.mark.path_independent


@dataclass
class TokenGateway:
    gateway: CliGateway
    key: bytes
    key_file: Path
    audit_log: Path
    workdir: Path

    @property
    def port(self) -> int:
        return self.gateway.port

    def secret_texts(self) -> str:
        """Everything the gateway wrote: its log (at debug level) and its audit log."""
        audit = self.audit_log.read_text() if self.audit_log.exists() else ""
        return self.gateway.log_text() + audit

    def known_hosts(self) -> Path:
        public = Path(f"{self.gateway.host_key_path}.pub").read_text().split()
        path = self.workdir / "known_hosts"
        path.write_text(f"[127.0.0.1]:{self.port} {public[0]} {public[1]}\n")
        return path

    def ssh(
        self,
        user: str,
        *args: str,
        password: str | None = None,
        method: str = "password",
    ) -> subprocess.CompletedProcess[bytes]:
        """The real ssh; a password comes from SSH_ASKPASS (so it is in no argv)."""
        argv = [
            "ssh",
            "-F",
            "/dev/null",
            "-o",
            f"UserKnownHostsFile={self.known_hosts()}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "NumberOfPasswordPrompts=1",
            "-p",
            str(self.port),
        ]
        env = dict(os.environ)
        if password is None:
            argv += ["-o", "BatchMode=yes"]
        else:
            askpass = self.workdir / "askpass"
            askpass.write_text('#!/bin/sh\nprintf "%s\\n" "$TOKEN_FOR_TEST"\n')
            askpass.chmod(askpass.stat().st_mode | stat.S_IXUSR)
            argv += ["-o", f"PreferredAuthentications={method}"]
            env.update(SSH_ASKPASS=str(askpass), SSH_ASKPASS_REQUIRE="force")
            env["TOKEN_FOR_TEST"] = password
        return subprocess.run(
            [*argv, f"{user}@127.0.0.1", *args],
            capture_output=True,
            timeout=60,
            env=env,
            stdin=subprocess.DEVNULL,
        )


def _key_file(tmp_path: Path) -> tuple[bytes, Path]:
    key = base64.b64encode(secrets.token_bytes(32))
    path = tmp_path / "token.key"
    path.write_bytes(key + b"\n")
    path.chmod(0o600)
    return key, path


@pytest.fixture
def token_gateway(tmp_path: Path, client_tools: None, sandbox_image: str) -> Iterator[TokenGateway]:
    key, key_file = _key_file(tmp_path)
    audit = tmp_path / "audit.jsonl"
    with CliGateway(
        tmp_path / "host_key",
        "--auth",
        "token",
        "--token-key-file",
        str(key_file),
        "--log-level",
        "debug",
        "--audit-log",
        str(audit),
    ) as gateway:
        yield TokenGateway(gateway, key, key_file, audit, tmp_path)


def _one_line_refusal(result: subprocess.CompletedProcess[bytes], reason: str) -> None:
    assert result.returncode == 255, result
    stderr = result.stderr.decode()
    assert reason in stderr, stderr
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if reason in line]
    assert len(lines) == 1, stderr


def _token_cli(tg: TokenGateway, session_id: str, ttl: str = "2h") -> str:
    """`sandbox-ssh token`'s output."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sandbox_ssh",
            "token",
            session_id,
            "--ttl",
            ttl,
            "--token-key-file",
            str(tg.key_file),
            "--port",
            str(tg.port),
            "--host-key",
            str(tg.gateway.host_key_path),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def test_a_minted_token_logs_in_as_password_keyboard_interactive_and_in_the_username(
    token_gateway: TokenGateway, containers: Containers
) -> None:
    sandbox = containers.start()
    session = sandbox.session_id
    token = mint_token(token_gateway.key, session, 3600)
    by_password = token_gateway.ssh(session, "echo in; echo err >&2; exit 3", password=token)
    assert (by_password.returncode, by_password.stdout) == (3, b"in\n"), by_password.stderr
    interactive = token_gateway.ssh(
        session, "echo kbd", password=token, method="keyboard-interactive"
    )
    assert interactive.stdout == b"kbd\n", interactive.stderr
    in_username = token_gateway.ssh(f"{session}#{token}", "echo user; printenv USER")
    assert in_username.returncode == 0, in_username.stderr
    assert in_username.stdout.split(b"\n")[0] == b"user"
    # The sandbox sees its own user, not the token, and no log holds it.
    assert token not in in_username.stdout.decode()
    assert token.split(".")[1] not in token_gateway.secret_texts()


def test_the_token_command_prints_a_config_block_and_a_command_that_work(
    token_gateway: TokenGateway, containers: Containers, tmp_path: Path
) -> None:
    sandbox = containers.start()
    printed = _token_cli(token_gateway, sandbox.session_id)
    block = printed.split("# Or at once", 1)[0]
    assert f"Host {sandbox.session_id}" in block and "KnownHostsCommand /bin/echo" in block
    config = tmp_path / "ssh_config"
    config.write_text(block + "    StrictHostKeyChecking yes\n    UserKnownHostsFile /dev/null\n")
    result = subprocess.run(
        ["ssh", "-F", str(config), "-o", "BatchMode=yes", sandbox.session_id, "echo via-config"],
        capture_output=True,
        timeout=60,
    )
    assert result.stdout == b"via-config\n", result.stderr
    command = printed.strip().splitlines()[-1]
    assert command.startswith("ssh -p ")
    once = subprocess.run(
        f"{command} -o BatchMode=yes -o StrictHostKeyChecking=yes "
        "-o UserKnownHostsFile=/dev/null echo via-command",
        shell=True,
        capture_output=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert once.stdout == b"via-command\n", once.stderr


def test_expired_tampered_and_other_session_tokens_are_refused_in_one_line(
    token_gateway: TokenGateway, containers: Containers
) -> None:
    sandbox, other = containers.start(), containers.start()
    session = sandbox.session_id
    key = token_gateway.key
    expired = mint_token(key, session, 60, now=time.time() - 3600)
    good = mint_token(key, session, 3600)
    tampered = good[:-1] + ("A" if good[-1] != "A" else "B")
    for_other = mint_token(key, other.session_id, 3600)
    _one_line_refusal(
        token_gateway.ssh(session, "true", password=expired),
        f'the token for session "{session}" has expired',
    )
    _one_line_refusal(
        token_gateway.ssh(f"{session}#{tampered}", "true"),
        f'the token is not valid for session "{session}"',
    )
    _one_line_refusal(
        token_gateway.ssh(session, "true", password=for_other),
        f'the token is not valid for session "{session}"',
    )
    _one_line_refusal(
        token_gateway.ssh(session, "true", password=""),
        f'the token is not valid for session "{session}"',
    )
    texts = token_gateway.secret_texts()
    for token in (expired, good, tampered, for_other):
        assert token.split(".")[1] not in texts
    assert "token refused" in texts  # each refusal is logged, by session and reason


def test_putty_plink_and_paramiko_send_the_token_as_password(
    token_gateway: TokenGateway, containers: Containers
) -> None:
    ensure_commands("plink")
    sandbox = containers.start()
    token = mint_token(token_gateway.key, sandbox.session_id, 3600)
    fingerprint = subprocess.run(
        ["ssh-keygen", "-lf", f"{token_gateway.gateway.host_key_path}.pub"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[1]
    plink = subprocess.run(
        [
            "plink",
            "-ssh",
            "-batch",
            "-hostkey",
            fingerprint,
            "-P",
            str(token_gateway.port),
            "-pw",
            token,
            f"{sandbox.session_id}@127.0.0.1",
            "echo from-plink; exit 4",
        ],
        capture_output=True,
        timeout=60,
    )
    assert (plink.returncode, plink.stdout) == (4, b"from-plink\n"), plink.stderr
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    try:
        client.connect(
            "127.0.0.1",
            token_gateway.port,
            username=sandbox.session_id,
            password=token,
            look_for_keys=False,
            allow_agent=False,
            timeout=30,
        )
        _, stdout, _ = client.exec_command("echo from-paramiko")
        assert stdout.read() == b"from-paramiko\n"
    finally:
        client.close()
    refused = paramiko.SSHClient()
    refused.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    with pytest.raises(paramiko.SSHException):
        refused.connect(
            "127.0.0.1",
            token_gateway.port,
            username=sandbox.session_id,
            password=token[:-2],
            look_for_keys=False,
            allow_agent=False,
            timeout=30,
        )
    refused.close()
    assert token.split(".")[1] not in token_gateway.secret_texts()


def test_a_connection_outlives_its_token_as_under_sshd(
    token_gateway: TokenGateway, containers: Containers
) -> None:
    sandbox = containers.start()
    token = mint_token(token_gateway.key, sandbox.session_id, 4)
    started = time.time()
    result = token_gateway.ssh(f"{sandbox.session_id}#{token}", "sleep 6; echo still-here")
    assert result.stdout == b"still-here\n", result.stderr
    assert time.time() - started >= 6
    late = token_gateway.ssh(f"{sandbox.session_id}#{token}", "true")
    _one_line_refusal(late, "has expired")


def test_single_use_tokens_from_the_hook_work_once_and_are_never_cached(
    tmp_path: Path, hook_server: HookServer, containers: Containers, sandbox_image: str
) -> None:
    sandbox = containers.start()
    session = sandbox.session_id
    single, reusable = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    hook_server.tokens = {single: (session, True), reusable: (session, False)}
    hook_token = tmp_path / "hook-token"
    hook_token.write_text(HOOK_TOKEN + "\n")
    audit = tmp_path / "audit.jsonl"
    with CliGateway(
        tmp_path / "host_key",
        "--auth",
        "token",
        "--token-url",
        hook_server.url("token"),
        "--hook-token-file",
        str(hook_token),
        "--log-level",
        "debug",
        "--audit-log",
        str(audit),
    ) as gateway:
        tg = TokenGateway(gateway, b"", tmp_path / "none", audit, tmp_path)
        assert tg.ssh(f"{session}#{single}", "echo once").stdout == b"once\n"
        _one_line_refusal(tg.ssh(f"{session}#{single}", "true"), "the token was already used")
        for _ in range(3):
            assert tg.ssh(session, "echo again", password=reusable).stdout == b"again\n"
        _one_line_refusal(
            tg.ssh(session, "true", password="made-up-token"), "the token is not valid"
        )
        other = containers.start()
        _one_line_refusal(
            tg.ssh(f"{other.session_id}#{reusable}", "true"), "the token is not valid"
        )
        texts = tg.secret_texts()
    calls = hook_server.hooks("token")
    assert sum(1 for call in calls if call["token"] == single) == 2  # asked each time
    assert sum(1 for call in calls if call["token"] == reusable) == 2  # cached for its session
    for token in (single, reusable, "made-up-token"):
        assert token not in texts


def test_sign_key_issues_a_certificate_that_expires(
    tmp_path: Path, containers: Containers, client_tools: None, sandbox_image: str
) -> None:
    for name in ("ca", "user"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / name)], check=True
        )
    sandbox, other = containers.start(), containers.start()

    def sign(session: str, ttl: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "sandbox_ssh",
                "sign-key",
                session,
                str(tmp_path / "user.pub"),
                "--ttl",
                ttl,
                "--ca-key",
                str(tmp_path / "ca"),
            ],
            capture_output=True,
            text=True,
        )

    signed = sign(sandbox.session_id, "1h")
    assert signed.returncode == 0, signed.stderr
    certificate = tmp_path / "user-cert.pub"
    listing = subprocess.run(
        ["ssh-keygen", "-L", "-f", str(certificate)], capture_output=True, text=True, check=True
    ).stdout
    assert sandbox.session_id in listing.split("Principals:")[1]
    valid = listing.split("Valid: from ")[1].split("\n")[0].split(" to ")
    start, end = (time.mktime(time.strptime(when, "%Y-%m-%dT%H:%M:%S")) for when in valid)
    assert 3600 <= end - start <= 3600 + 61  # the TTL, from a minute back for clock skew
    assert abs(end - (time.time() + 3600)) < 60
    key, key_file = _key_file(tmp_path)
    with CliGateway(
        tmp_path / "host_key",
        "--auth",
        "publickey,token",
        "--token-key-file",
        str(key_file),
        "--trusted-user-ca-keys",
        str(tmp_path / "ca.pub"),
    ) as gateway:
        tg = TokenGateway(gateway, key, key_file, tmp_path / "audit", tmp_path)
        options = [
            "-F",
            "/dev/null",
            "-o",
            f"UserKnownHostsFile={tg.known_hosts()}",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-i",
            str(tmp_path / "user"),
            "-p",
            str(gateway.port),
        ]

        def by_certificate(session: str) -> subprocess.CompletedProcess[bytes]:
            return subprocess.run(
                ["ssh", *options, f"{session}@127.0.0.1", "echo cert"],
                capture_output=True,
                timeout=60,
            )

        assert by_certificate(sandbox.session_id).stdout == b"cert\n"
        assert by_certificate(other.session_id).returncode == 255  # not its principal
        # The same gateway takes tokens too (publickey,token).
        token = mint_token(key, other.session_id, 60)
        assert tg.ssh(f"{other.session_id}#{token}", "echo token").stdout == b"token\n"
    refused = sign("not a session", "1h")
    assert refused.returncode != 0 and "is not a session ID" in refused.stderr


def test_max_connection_age_closes_with_a_reason(
    tmp_path: Path, containers: Containers, client_tools: None, sandbox_image: str
) -> None:
    sandbox = containers.start()
    with CliGateway(tmp_path / "host_key", "--max-connection-age", "2s") as gateway:
        tg = TokenGateway(gateway, b"", tmp_path / "none", tmp_path / "audit", tmp_path)
        started = time.time()
        result = tg.ssh(sandbox.session_id, "sleep 30")
        assert time.time() - started < 20
        _one_line_refusal(result, "the connection reached its maximum age (2s); connect again")
