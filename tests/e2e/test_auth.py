"""Authentication and hardening: publickey, certificates, limits, algorithms, host keys."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from sandbox_ssh._ssh.algorithms import SIGNATURE_ALGS

from ..conftest import GatewayFactory
from ..support.containers import Containers
from ..support.gateway import CliGateway, LoopThread, serve_once
from ..support.ssh import SSHClient


def keygen(path: Path, kind: str = "ed25519") -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(path)], check=True)
    return path


def public(path: Path) -> str:
    return Path(str(path) + ".pub").read_text().strip()


def with_key(key: Path, *more: str) -> list[str]:
    return ["-o", f"IdentityFile={key}", "-o", "IdentitiesOnly=yes", *more]


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    folder = tmp_path / "keys"
    folder.mkdir()
    return {name: keygen(folder / name) for name in ("user", "other", "admin", "ca")}


@contextlib.contextmanager
def serving(tmp_path: Path, *args: str) -> Iterator[tuple[CliGateway, SSHClient]]:
    with CliGateway(tmp_path / "host_key", *args) as gateway:
        yield (
            gateway,
            SSHClient(gateway.host, gateway.port, gateway.host_key_path, tmp_path / "client"),
        )


@pytest.fixture
def publickey_gateway(
    tmp_path: Path, keys: dict[str, Path], client_tools: None, sandbox_image: str
) -> Iterator[tuple[CliGateway, SSHClient, Path]]:
    directory = tmp_path / "authorized"
    directory.mkdir()
    (tmp_path / "admin_keys").write_text(public(keys["admin"]) + "\n")
    (tmp_path / "ca.pub").write_text(public(keys["ca"]) + "\n")
    with serving(
        tmp_path,
        "--auth",
        "publickey",
        "--authorized-keys-dir",
        str(directory),
        "--admin-keys",
        str(tmp_path / "admin_keys"),
        "--trusted-user-ca-keys",
        str(tmp_path / "ca.pub"),
    ) as (gateway, ssh):
        yield gateway, ssh, directory


def test_no_auth_is_refused_beyond_loopback(tmp_path: Path) -> None:
    result = serve_once(
        "--listen", "0.0.0.0:0", "--auth", "none", "--host-key", str(tmp_path / "key")
    )
    assert result.returncode != 0
    assert "refusing to listen on 0.0.0.0:0 without authentication" in result.stderr
    assert "Traceback" not in result.stderr


def test_insecure_no_auth_beyond_loopback_starts_with_a_warning(
    tmp_path: Path, containers: Containers, client_tools: None
) -> None:
    gateway = CliGateway(tmp_path / "key", "--auth", "none", "--insecure-allow-no-auth")
    gateway.terminate()
    with CliGateway(
        tmp_path / "key", "--listen", "0.0.0.0:0", "--auth", "none", "--insecure-allow-no-auth"
    ) as wide:
        log = wide.wait_for_log(lambda text: "authentication is OFF" in text)
        assert "anyone who can reach it can use any sandbox" in log


def test_publickey_is_the_default_beyond_loopback(tmp_path: Path, client_tools: None) -> None:
    with CliGateway(tmp_path / "key", "--listen", "0.0.0.0:0") as gateway:
        assert "(auth: publickey)" in gateway.log_text()


def test_session_key_from_directory_admin_key_and_unknown_key(
    publickey_gateway: tuple[CliGateway, SSHClient, Path],
    keys: dict[str, Path],
    containers: Containers,
) -> None:
    _, ssh, directory = publickey_gateway
    sandbox = containers.start()
    (directory / sandbox.session_id).write_text(public(keys["user"]) + "\n")
    assert ssh.run(sandbox.session_id, "echo in", options=with_key(keys["user"])).stdout == b"in\n"
    assert ssh.run(sandbox.session_id, "echo in", options=with_key(keys["admin"])).stdout == b"in\n"
    denied = ssh.run(sandbox.session_id, "echo in", options=with_key(keys["other"]))
    assert denied.returncode == 255 and b"Permission denied (publickey)" in denied.stderr
    # A key for one session grants nothing on another.
    other = containers.start()
    elsewhere = ssh.run(other.session_id, "echo in", options=with_key(keys["user"]))
    assert elsewhere.returncode == 255


def test_key_from_the_sandbox_label(
    publickey_gateway: tuple[CliGateway, SSHClient, Path],
    keys: dict[str, Path],
    containers: Containers,
) -> None:
    _, ssh, _ = publickey_gateway
    sandbox = containers.start(labels={"sandbox-ssh.authorized-keys": public(keys["other"])})
    options = with_key(keys["other"])
    assert ssh.run(sandbox.session_id, "echo label", options=options).stdout == b"label\n"


def test_authorized_keys_options_are_honoured(
    publickey_gateway: tuple[CliGateway, SSHClient, Path],
    keys: dict[str, Path],
    containers: Containers,
) -> None:
    _, ssh, directory = publickey_gateway
    sandbox = containers.start()
    session_id = sandbox.session_id
    key = public(keys["user"])
    path = directory / session_id
    path.write_text(f'environment="FROM_KEY=yes",no-pty {key}\n')
    result = ssh.run(session_id, "echo $FROM_KEY", options=with_key(keys["user"]))
    assert result.stdout == b"yes\n"
    # A PTY asked for explicitly and refused is fatal to the OpenSSH client, as with sshd.
    refused = ssh.run(session_id, "echo reached", options=with_key(keys["user"], "-tt"))
    assert b"PTY allocation request failed" in refused.stderr
    assert b"reached" not in refused.stdout
    path.write_text(f'command="echo forced $SSH_ORIGINAL_COMMAND" {key}\n')
    forced = ssh.run(session_id, "echo asked", options=with_key(keys["user"]))
    assert forced.stdout.startswith(b"forced")
    path.write_text(f"no-port-forwarding {key}\n")
    refused = ssh.run(session_id, options=with_key(keys["user"], "-W", "127.0.0.1:22"))
    assert refused.returncode == 255 and b"prohibited" in refused.stderr
    path.write_text(f'from="10.99.99.99" {key}\n')
    elsewhere = ssh.run(session_id, "true", options=with_key(keys["user"]))
    assert elsewhere.returncode == 255 and b"Permission denied" in elsewhere.stderr


def sign_certificate(
    ca: Path, user: Path, principal: str, validity: str = "-1m:+1h", *options: str
) -> Path:
    extra = [arg for option in options for arg in ("-O", option)]
    subprocess.run(
        [
            "ssh-keygen",
            "-q",
            "-s",
            str(ca),
            "-I",
            "test-cert",
            "-n",
            principal,
            "-V",
            validity,
            *extra,
            str(user) + ".pub",
        ],
        check=True,
    )
    return Path(str(user) + "-cert.pub")


def test_user_certificates_name_the_session(
    publickey_gateway: tuple[CliGateway, SSHClient, Path],
    keys: dict[str, Path],
    containers: Containers,
) -> None:
    _, ssh, _ = publickey_gateway
    sandbox = containers.start()
    session_id = sandbox.session_id
    certificate = sign_certificate(keys["ca"], keys["other"], session_id)
    options = with_key(keys["other"], "-o", f"CertificateFile={certificate}")
    assert ssh.run(session_id, "echo cert", options=options).stdout == b"cert\n"
    sign_certificate(keys["ca"], keys["other"], "some-other-session")
    assert ssh.run(session_id, "echo cert", options=options).returncode == 255
    sign_certificate(keys["ca"], keys["other"], session_id, validity="20200101:20200102")
    assert ssh.run(session_id, "echo cert", options=options).returncode == 255
    # Critical options are honoured: a forced command and a source address.
    sign_certificate(
        keys["ca"], keys["other"], session_id, "-1m:+1h", "force-command=echo forced-by-cert"
    )
    assert ssh.run(session_id, "echo asked", options=options).stdout == b"forced-by-cert\n"
    sign_certificate(
        keys["ca"], keys["other"], session_id, "-1m:+1h", "source-address=10.99.0.0/16"
    )
    assert ssh.run(session_id, "echo cert", options=options).returncode == 255


class MismatchedKey(asyncssh.SSHKeyPair):
    """Offers an authorized public key but signs with a different private key."""

    def __init__(self, offered: asyncssh.SSHKey, signer: asyncssh.SSHKey) -> None:
        super().__init__(
            offered.algorithm,
            offered.algorithm,
            offered.sig_algorithms,
            offered.sig_algorithms,
            offered.public_data,
            "mismatched",
        )
        self._signer = signer

    def sign(self, data: bytes) -> bytes:
        return bytes(self._signer.sign(data, b"ssh-ed25519"))


def test_a_key_merely_offered_grants_nothing(
    publickey_gateway: tuple[CliGateway, SSHClient, Path],
    keys: dict[str, Path],
    containers: Containers,
    loop_thread: LoopThread,
) -> None:
    """Regression for the class of Go's CVE-2024-45337: identity binds only to a verified key."""
    gateway, _, directory = publickey_gateway
    sandbox = containers.start()
    session_id = sandbox.session_id
    (directory / session_id).write_text(public(keys["user"]) + "\n")
    authorized = asyncssh.read_private_key(str(keys["user"]))
    attacker = asyncssh.read_private_key(str(keys["other"]))

    async def attempt() -> str:
        try:
            async with asyncssh.connect(
                gateway.host,
                gateway.port,
                username=session_id,
                known_hosts=None,
                client_keys=[MismatchedKey(authorized, attacker), attacker],
            ) as conn:
                return str((await conn.run("echo reached")).stdout)
        except asyncssh.PermissionDenied:
            return "denied"

    assert loop_thread.run(attempt()) == "denied"


def test_unknown_session_is_refused_before_credentials(
    publickey_gateway: tuple[CliGateway, SSHClient, Path],
) -> None:
    _, ssh, _ = publickey_gateway
    result = ssh.run("no-such-session", "true")  # the client has no key at all
    assert result.returncode == 255
    assert b'session "no-such-session": no sandbox with this session ID' in result.stderr


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("x" * 4096, "Username too long"),  # asyncssh's own bound, before anything else
        ("../etc", "not a valid session ID"),
        ("*", "not a valid session ID"),
        ("-oProxyCommand=id", "not a valid session ID"),
        ("s\u0435ssion", "not a valid session ID"),  # Cyrillic look-alike
        ("x" * 129, "not a valid session ID"),
        # SSH usernames go through SASLprep (RFC 4013), which maps full-width forms to
        # ASCII: the name is then the ASCII session ID, no more than typing it would reach.
        ("\uff53\uff45\uff53\uff53\uff49\uff4f\uff4e", 'session "session": no sandbox'),
        # Control characters: OpenSSH and asyncssh clients refuse to send them, a hostile
        # client would; asyncssh's server-side SASLprep refuses them with a reason.
        ("a\x01b", "Prohibited character"),
        ("line\nbreak", "Prohibited character"),
        ("tab\there", "Prohibited character"),
        ("nul\x00", "Prohibited character"),
    ],
)
def test_malformed_session_ids_are_refused_with_a_reason(
    publickey_gateway: tuple[CliGateway, SSHClient, Path],
    loop_thread: LoopThread,
    name: str,
    reason: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncssh.connection

    # Send the name as given: the client's own SASLprep would refuse some of these.
    monkeypatch.setattr(asyncssh.connection, "saslprep", lambda text: text)
    gateway, _, _ = publickey_gateway

    async def attempt() -> str:
        try:
            async with asyncssh.connect(
                gateway.host, gateway.port, username=name, known_hosts=None, client_keys=None
            ):
                return "connected"
        except asyncssh.DisconnectError as error:
            return str(error.reason)

    got = loop_thread.run(attempt())
    assert reason in got and len(got) < 200 and got.isprintable()
    assert "Traceback" not in gateway.log_text()


@pytest.mark.parametrize("auth", ["none", "publickey"])
def test_empty_username_is_refused_with_a_reason(
    gateway_factory: GatewayFactory, tmp_path: Path, auth: str
) -> None:
    """Regression: asyncssh never calls begin_auth for an empty username, which once
    ended as a bare "Permission denied ()" from `ssh -l ''`."""
    gateway = gateway_factory(auth=auth, authorized_keys_dir=tmp_path)
    client = gateway.client
    argv = ["ssh", *client.options, "-p", str(client.port), "-l", "", client.host, "true"]
    result = subprocess.run(argv, capture_output=True, stdin=subprocess.DEVNULL, timeout=60)
    assert result.returncode == 255
    assert b"the username is the session ID, and it is empty" in result.stderr


def test_too_many_authentication_failures(
    publickey_gateway: tuple[CliGateway, SSHClient, Path], tmp_path: Path, containers: Containers
) -> None:
    _, ssh, _ = publickey_gateway
    sandbox = containers.start()
    options = ["-o", "IdentitiesOnly=yes"]
    for index in range(8):
        options += ["-o", f"IdentityFile={keygen(tmp_path / f'wrong{index}')}"]
    result = ssh.run(sandbox.session_id, "true", options=options)
    assert result.returncode == 255
    assert b"Too many authentication failures" in result.stderr


def test_channel_limit_gives_resource_shortage(
    tmp_path: Path, containers: Containers, client_tools: None, loop_thread: LoopThread
) -> None:
    with serving(tmp_path, "--max-sessions", "2") as (gateway, _):
        sandbox = containers.start()
        session_id = sandbox.session_id

        async def scenario() -> tuple[str, str]:
            async with asyncssh.connect(
                gateway.host, gateway.port, username=session_id, known_hosts=None
            ) as conn:
                first = await conn.create_process("sleep 60")
                second = await conn.create_process("sleep 60")
                try:
                    await conn.create_process("echo third")
                    refusal = "opened"
                except asyncssh.ChannelOpenError as error:
                    refusal = f"{error.code}:{error.reason}"
                first.close()
                await first.wait_closed()
                # A closed channel frees its place.
                fourth = await conn.run("echo fourth")
                second.close()
                return refusal, str(fourth.stdout)

        refusal, fourth = loop_thread.run(scenario())
        assert (
            refusal == f"{asyncssh.OPEN_RESOURCE_SHORTAGE}:too many sessions on this "
            "connection (at most 2)"
        )
        assert fourth == "fourth\n"
        gateway.wait_for_log(lambda text: "refusing channel beyond --max-sessions 2" in text)


def test_silent_clients_hit_max_startups_and_login_grace(
    tmp_path: Path, containers: Containers, client_tools: None
) -> None:
    with serving(tmp_path, "--max-startups", "1", "--login-grace-time", "2") as (gateway, ssh):
        sandbox = containers.start()
        silent = socket.create_connection((gateway.host, gateway.port))
        silent.recv(100)  # the server's banner; then say nothing
        shed = ssh.run(sandbox.session_id, "true")
        assert shed.returncode == 255  # dropped: one connection is still authenticating
        gateway.wait_for_log(lambda text: "connections are still authenticating" in text)
        silent.settimeout(10)
        assert silent.recv(100) == b""  # the login grace time closes the silent one
        silent.close()
        assert ssh.run(sandbox.session_id, "echo ok").stdout == b"ok\n"


def test_connections_per_session_are_capped(
    tmp_path: Path, containers: Containers, client_tools: None
) -> None:
    with serving(tmp_path, "--max-connections-per-session", "1") as (_gateway, ssh):
        sandbox = containers.start()
        holder = ssh.popen(
            sandbox.session_id,
            "echo held; sleep 60",
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        second = ssh.run(sandbox.session_id, "true")
        assert second.returncode == 255 and b"too many connections" in second.stderr
        holder.kill()
        holder.wait()


def test_weak_algorithms_are_refused(ssh: SSHClient, containers: Containers) -> None:
    sandbox = containers.start()
    assert ssh.run(sandbox.session_id, "true").returncode == 0
    for option in (
        ["-c", "aes128-cbc"],
        ["-o", "KexAlgorithms=diffie-hellman-group14-sha1"],
        ["-c", "aes128-ctr", "-o", "MACs=hmac-sha1"],
        ["-o", "HostKeyAlgorithms=ssh-rsa"],
    ):
        result = ssh.run(sandbox.session_id, "true", options=option)
        assert result.returncode == 255, option
        assert b"no matching" in result.stderr or b"Unable to negotiate" in result.stderr, option


@pytest.mark.parametrize(
    "kex", ["sntrup761x25519-sha512@openssh.com", "sntrup761x25519-sha512", "default"]
)
def test_regression_sntrup761_was_not_offered(
    ssh: SSHClient, containers: Containers, kex: str
) -> None:
    # OpenSSH regress/kextype.sh: OpenSSH 9's default key exchange fell back to curve25519.
    # A wrong KEM would fail here: both sides must derive the same secret.
    sandbox = containers.start()
    options = ["-v"] + ([] if kex == "default" else ["-o", f"KexAlgorithms={kex}"])
    result = ssh.run(sandbox.session_id, "echo agreed", options=options)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"agreed\n"
    # Debian 12's OpenSSH 9.2 has no ML-KEM, and puts sntrup761x25519-sha512 first.
    expected = "sntrup761x25519-sha512" if kex == "default" else kex
    assert f"kex: algorithm: {expected}".encode() in result.stderr


def test_group_readable_host_key_is_refused(tmp_path: Path) -> None:
    key = keygen(tmp_path / "host_key")
    key.chmod(0o640)
    result = serve_once("--listen", "127.0.0.1:0", "--host-key", str(key))
    assert result.returncode != 0
    assert "readable by group or others (mode 0640)" in result.stderr


def test_rsa_host_key_alongside_ed25519_signs_with_sha2(
    tmp_path: Path, containers: Containers, client_tools: None
) -> None:
    rsa = keygen(tmp_path / "rsa_host_key", "rsa")
    with CliGateway(tmp_path / "host_key", "--host-key", str(rsa)) as gateway:
        known = tmp_path / "known_hosts"
        known.write_text(f"[{gateway.host}]:{gateway.port} {public(rsa)}\n")
        sandbox = containers.start()
        result = subprocess.run(
            [
                "ssh",
                "-F",
                "/dev/null",
                "-o",
                f"UserKnownHostsFile={known}",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "HostKeyAlgorithms=rsa-sha2-512",
                "-p",
                str(gateway.port),
                f"{sandbox.session_id}@{gateway.host}",
                "echo rsa",
            ],
            capture_output=True,
            timeout=60,
        )
        assert result.stdout == b"rsa\n", result.stderr


def read_events(path: Path) -> list[dict[str, object]]:
    import json

    return [json.loads(line) for line in path.read_text().splitlines() if line]


def test_audit_log_records_the_connection_and_reopens_on_sighup(
    tmp_path: Path, keys: dict[str, Path], containers: Containers, client_tools: None
) -> None:
    import signal

    from ..support.wait import wait_until

    # In a folder of its own, which serve makes for its unprivileged front: a rotated log
    # is made anew there, as the front's user.
    audit = tmp_path / "audit" / "audit.jsonl"
    directory = tmp_path / "authorized"
    directory.mkdir()
    with serving(
        tmp_path,
        "--auth",
        "publickey",
        "--authorized-keys-dir",
        str(directory),
        "--audit-log",
        str(audit),
    ) as (gateway, ssh):
        sandbox = containers.start()
        session_id = sandbox.session_id
        (directory / session_id).write_text(public(keys["user"]) + "\n")
        ok = ssh.run(
            session_id,
            "echo secret-arg-visible",
            options=with_key(keys["user"], "-o", "SetEnv=TOKEN=never-in-the-audit-log"),
        )
        assert ok.stdout == b"secret-arg-visible\n"
        ssh.run(session_id, options=with_key(keys["user"], "-W", "127.0.0.1:1"))
        assert ssh.run(session_id, "true", options=with_key(keys["other"])).returncode == 255

        def three_closed() -> list[dict[str, object]] | None:
            events = read_events(audit)
            closes = sum(event["event"] == "connection.close" for event in events)
            return events if closes >= 3 else None

        events = wait_until(three_closed)
        kinds = [event["event"] for event in events]
        for expected in (
            "auth",
            "connection.open",
            "exec",
            "exit",
            "forward.refused",
            "connection.close",
        ):
            assert expected in kinds, kinds
        opened = next(e for e in events if e["event"] == "connection.open")
        assert opened["session"] == session_id and str(opened["remote"]).startswith("127.0.0.1:")
        assert "OpenSSH" in str(opened["client_version"])
        success = next(e for e in events if e["event"] == "auth" and e["result"] == "success")
        assert str(success["key"]).startswith("SHA256:")
        assert any(e["event"] == "auth" and e["result"] == "failure" for e in events)
        command = next(e for e in events if e["event"] == "exec")
        assert command["command"] == "echo secret-arg-visible"
        assert next(e for e in events if e["event"] == "exit")["status"] == 0
        closed = next(e for e in events if e["event"] == "connection.close")
        assert int(str(closed["bytes_in"])) > 0 and int(str(closed["bytes_out"])) > 0
        assert "never-in-the-audit-log" not in audit.read_text()
        # Rotation: move the file away, SIGHUP, and new events land in a new file.
        audit.rename(audit.with_name("audit.jsonl.1"))
        gateway.process.send_signal(signal.SIGHUP)
        wait_until(audit.exists)
        assert ssh.run(session_id, "true", options=with_key(keys["user"])).returncode == 0
        wait_until(lambda: any(e["event"] == "connection.close" for e in read_events(audit)))
        assert oct(audit.stat().st_mode & 0o777) == "0o600"


def test_source_rate_and_ban(
    tmp_path: Path, keys: dict[str, Path], containers: Containers, client_tools: None
) -> None:
    directory = tmp_path / "authorized"
    directory.mkdir()
    with serving(
        tmp_path,
        "--auth",
        "publickey",
        "--authorized-keys-dir",
        str(directory),
        "--ban-after-failures",
        "3",
        "--ban-time",
        "1h",
    ) as (gateway, ssh):
        sandbox = containers.start()
        session_id = sandbox.session_id
        (directory / session_id).write_text(public(keys["user"]) + "\n")
        for _ in range(3):
            ssh.run(session_id, "true", options=with_key(keys["other"]))
        banned = ssh.run(session_id, "true", options=with_key(keys["user"]))
        assert banned.returncode == 255  # even the right key: the address is banned
        gateway.wait_for_log(
            lambda text: "banning 127.0.0.1 after repeated authentication failures" in text
        )
    with serving(tmp_path / "rate", "--max-connections-per-minute", "3") as (limited, ssh):
        sandbox = containers.start()
        results = [ssh.run(sandbox.session_id, "true") for _ in range(5)]
        assert [r.returncode for r in results[:3]] == [0, 0, 0]
        assert [r.returncode for r in results[3:]] == [255, 255]
        limited.wait_for_log(lambda text: "connection rate limit exceeded" in text)


def test_unresponsive_client_is_dropped_by_client_alive(
    tmp_path: Path, containers: Containers, client_tools: None
) -> None:
    import signal

    from ..support.wait import wait_until

    with serving(tmp_path, "--client-alive-interval", "1", "--client-alive-count-max", "2") as (
        gateway,
        ssh,
    ):
        sandbox = containers.start()
        client = ssh.popen(
            sandbox.session_id,
            "echo up; sleep 120",
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert client.stdout is not None and client.stdout.readline() == b"up\n"
        client.send_signal(signal.SIGSTOP)  # the client stops answering keepalives
        try:
            wait_until(
                lambda: "connection closed" in gateway.log_text(),
                timeout=20,
                message="the unresponsive client was not dropped",
            )
            wait_until(lambda: "sleep 120" not in sandbox.processes(), timeout=20)
        finally:
            client.send_signal(signal.SIGCONT)
            client.kill()
            client.wait()


def test_algorithm_lists_are_configurable(
    tmp_path: Path, containers: Containers, client_tools: None
) -> None:
    with serving(tmp_path, "--ciphers", "aes256-gcm@openssh.com", "--compression") as (
        _gateway,
        ssh,
    ):
        sandbox = containers.start()
        refused = ssh.run(
            sandbox.session_id, "true", options=["-c", "chacha20-poly1305@openssh.com"]
        )
        assert refused.returncode == 255 and b"no matching cipher" in refused.stderr
        chosen = ssh.run(sandbox.session_id, "echo gcm", options=["-v", "-C"])
        assert chosen.stdout == b"gcm\n"
        assert b"cipher: aes256-gcm@openssh.com" in chosen.stderr
        assert b"compression: zlib@openssh.com" in chosen.stderr
    bad = serve_once(
        "--listen", "127.0.0.1:0", "--host-key", str(tmp_path / "key2"), "--ciphers", "rot13"
    )
    assert bad.returncode != 0 and "unsupported cipher algorithm(s): rot13" in bad.stderr


def test_banned_address_cannot_log_in_before_the_refusal_is_sent(
    tmp_path: Path,
    keys: dict[str, Path],
    containers: Containers,
    gateway_factory: GatewayFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Regression: the reason for an early refusal is sent after a short delay, and a
    fast client once completed its key exchange and logged in within that delay."""
    from sandbox_ssh._ssh import connection

    monkeypatch.setattr(connection, "_EARLY_REFUSAL_DELAY", 60.0)
    directory = tmp_path / "authorized"
    directory.mkdir()
    gateway = gateway_factory(auth="publickey", authorized_keys_dir=directory, ban_after_failures=2)
    sandbox = containers.start()
    (directory / sandbox.session_id).write_text(public(keys["user"]) + "\n")
    for _ in range(2):
        assert (
            gateway.client.run(
                sandbox.session_id, "true", options=with_key(keys["other"])
            ).returncode
            == 255
        )
    banned = gateway.client.run(sandbox.session_id, "echo in", options=with_key(keys["user"]))
    assert banned.returncode == 255
    assert banned.stdout == b""
    assert b"banned after repeated authentication failures" in banned.stderr


def test_no_ignore_packet_before_each_packet_unless_cbc_is_offered(
    tmp_path: Path,
    containers: Containers,
    loop_thread: LoopThread,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Regression: asyncssh put an empty IGNORE before every packet, a CBC-only
    defence that doubled the packets encrypted and written per keystroke echo."""
    from asyncssh.connection import SSHConnection
    from asyncssh.constants import MSG_IGNORE

    ignored: list[int] = []
    original = SSHConnection._packet_handlers[MSG_IGNORE]

    def counting(conn: Any, pkttype: int, pktid: int, packet: Any) -> Any:
        ignored.append(pktid)
        return original(conn, pkttype, pktid, packet)

    monkeypatch.setitem(SSHConnection._packet_handlers, MSG_IGNORE, counting)
    sandbox = containers.start()

    async def count_ignores(gateway: CliGateway, cipher: str) -> int:
        ignored.clear()
        async with asyncssh.connect(
            gateway.host,
            gateway.port,
            username=sandbox.session_id,
            known_hosts=None,
            client_keys=None,
            encryption_algs=[cipher],
        ) as conn:
            result = await conn.run("seq 1 2000; echo done", check=True)
            assert isinstance(result.stdout, str) and result.stdout.endswith("2000\ndone\n")
        return len(ignored)

    with serving(tmp_path / "modern") as (modern, _):
        assert loop_thread.run(count_ignores(modern, "chacha20-poly1305@openssh.com")) == 0
    with serving(tmp_path / "cbc", "--ciphers", "aes128-ctr,aes128-cbc") as (legacy, _):
        assert loop_thread.run(count_ignores(legacy, "aes128-ctr")) == 0
        assert loop_thread.run(count_ignores(legacy, "aes128-cbc")) > 0


# User signature algorithms: sshd 9.2's defaults refuse ssh-rsa (SHA-1) and ssh-dss. asyncssh
# offered only the configured list in server-sig-algs, yet verified any (found with Go's
# x/crypto/ssh; docs/upstream/asyncssh-user-signature-algorithms.md). Each case: refused by
# default, with the algorithm named in the gateway's log; accepted once the operator lists it.
LEGACY_SIGNATURES = ",".join([*SIGNATURE_ALGS, "ssh-rsa", "ssh-dss"])


@dataclass
class SignatureCase:
    key_kind: str  # the user's key
    client_signs_with: str
    ca_signs_with: str | None  # a certificate from an RSA CA, signed with this
    refusal: str  # what the gateway logs


SIGNATURE_CASES = {
    "ssh-rsa-sha1": SignatureCase("ssh-rsa", "ssh-rsa", None, "signature algorithm ssh-rsa"),
    "ssh-dss": SignatureCase(
        "ssh-dss", "ssh-dss", None, "no accepted signature algorithm for a ssh-dss key"
    ),
    "dsa-certificate": SignatureCase(
        "ssh-dss", "ssh-dss", "rsa-sha2-512", "no accepted signature algorithm for a ssh-dss key"
    ),
    "certificate-signed-with-sha1": SignatureCase(
        "ssh-ed25519",
        "ssh-ed25519",
        "ssh-rsa",
        "the certificate's CA signature algorithm ssh-rsa",
    ),
}


def _legacy_key(kind: str) -> asyncssh.SSHKey:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cryptography deprecates DSA
        return asyncssh.generate_private_key(kind)


@pytest.mark.path_independent
@pytest.mark.parametrize("case", SIGNATURE_CASES.values(), ids=SIGNATURE_CASES.keys())
def test_regression_user_signature_algorithms_outside_the_defaults_were_accepted(
    case: SignatureCase,
    tmp_path: Path,
    containers: Containers,
    loop_thread: LoopThread,
    client_tools: None,
) -> None:
    sandbox = containers.start()
    session_id = sandbox.session_id
    user_key = _legacy_key(case.key_kind)
    authorized = tmp_path / "authorized"
    authorized.mkdir()
    gateway_args = ["--auth", "publickey", "--log-level", "info"]
    client_key: asyncssh.SSHKey | tuple[asyncssh.SSHKey, asyncssh.SSHCertificate] = user_key
    if case.ca_signs_with is None:
        (authorized / session_id).write_text(user_key.export_public_key().decode())
        gateway_args += ["--authorized-keys-dir", str(authorized)]
    else:
        ca = _legacy_key("ssh-rsa")
        (tmp_path / "ca.pub").write_bytes(ca.export_public_key())
        certificate = ca.generate_user_certificate(
            user_key, "test-cert", principals=[session_id], sig_alg=case.ca_signs_with
        )
        client_key = (user_key, certificate)
        gateway_args += ["--trusted-user-ca-keys", str(tmp_path / "ca.pub")]

    async def log_in(gateway: CliGateway) -> str:
        try:
            async with asyncssh.connect(
                gateway.host,
                gateway.port,
                username=session_id,
                known_hosts=None,
                client_keys=[client_key],
                signature_algs=[case.client_signs_with],
            ) as conn:
                return str((await conn.run("echo in", check=True)).stdout)
        except asyncssh.PermissionDenied:
            return "denied"

    with CliGateway(tmp_path / "host_key", *gateway_args) as gateway:
        assert loop_thread.run(log_in(gateway)) == "denied"
        logged = gateway.wait_for_log(lambda text: case.refusal in text)
        refusals = [line for line in logged.splitlines() if case.refusal in line]
        assert f'session "{session_id}": publickey from 127.0.0.1' in refusals[0]
    listed = ["--host-key-algorithms", LEGACY_SIGNATURES]
    with CliGateway(tmp_path / "host_key", *gateway_args, *listed) as gateway:
        assert loop_thread.run(log_in(gateway)) == "in\n"
