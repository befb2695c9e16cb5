"""OpenSSH's own regression suite (regress/, V_9_2_P1) against the gateway.

Each applicable script runs as OpenSSH's Makefile runs it (``sh test-exec.sh OBJ
SCRIPT``), with sshd replaced by the stand-ins of tests/support/openssh_regress.py.
What a script checks is what sshd would have to do; a failure prints the script's
own log. Scripts that only test the client, or that reconfigure sshd in ways with
no gateway equivalent, are listed below with the reason.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..support.containers import Containers
from ..support.gateway import CliGateway
from ..support.netclient import free_port
from ..support.openssh_regress import SCRIPTS, RegressHarness

APPLICABLE = [
    "connect",
    "connect-privsep",
    "connect-uri",
    "proto-version",
    "exit-status",
    "exit-status-signal",
    "envpass",
    "transfer",
    "dhgex",
    "stderr-data",
    "stderr-after-eof",
    "broken-pipe",
    "try-ciphers",
    "yes-head",
    "login-timeout",
    "agent",
    "agent-getpeereid",
    "agent-timeout",
    "agent-subprocess",
    "keyscan",
    "scp",
    "scp3",
    "scp-uri",
    "sftp",
    "sftp-cmds",
    "sftp-badcmds",
    "sftp-batch",
    "sftp-glob",
    "sftp-uri",
    "dynamic-forward",
    "forwarding",
    "multiplex",
    "portnum",
    "kextype",
    "localcommand",
    "host-expand",
    "percent",
    "knownhosts",
    "knownhosts-command",
    "brokenkeys",
]


# Every other script of the Makefile's LTESTS, and why it does not apply to the gateway.
_SSHD_CONFIG = "sshd configuration with no gateway counterpart: "
_CLIENT_ONLY = "the client tools alone; no server takes part"
NOT_APPLICABLE = {
    "proxy-connect": "asserts what `sshd -i` on pipes reports (SSH_CONNECTION 'UNKNOWN 65535') "
    "and BSD auth styles (user:style); the gateway always serves a socket, and a session ID "
    "never holds ':'",
    "sshfp-connect": "needs DNS SSHFP records; client side",
    "proto-mismatch": "checks the exit status of `sshd -i`, which has no gateway counterpart; "
    "the reply it expects (Protocol major versions differ.) is pinned in test_bad_input.py",
    "banner": _SSHD_CONFIG + "Banner",
    "rekey": _SSHD_CONFIG + "RekeyLimit, and sshd -T's parsing of it; its first part, "
    "client-initiated rekeying under every key exchange, cipher and MAC, passes",
    "reexec": "sshd's re-exec of itself",
    "reconfigure": "sshd's SIGHUP reload",
    "keygen-change": _CLIENT_ONLY,
    "keygen-comment": _CLIENT_ONLY,
    "keygen-convert": _CLIENT_ONLY,
    "keygen-knownhosts": _CLIENT_ONLY,
    "keygen-moduli": _CLIENT_ONLY,
    "keygen-sshfp": _CLIENT_ONLY,
    "krl": _CLIENT_ONLY,
    "sshsig": _CLIENT_ONLY,
    "agent-ptrace": "ptrace protection of ssh-agent on the client host",
    "agent-restrict": "needs publickey-hostbound-v00@openssh.com authentication, which asyncssh "
    "does not implement",
    "key-options": _SSHD_CONFIG + "PermitUserEnvironment, and from= checked against a "
    "proxied connection's UNKNOWN address; the gateway's authorized_keys options are tested "
    "in test_auth.py",
    "sftp-chroot": _SSHD_CONFIG + "ChrootDirectory",
    "sftp-perm": "sftp-server's -P/-p request lists, given on sshd's Subsystem line",
    "forward-control": _SSHD_CONFIG + "AllowTcpForwarding, PermitOpen, PermitListen "
    "(the gateway's --disable-forwarding is tested in test_forwarding.py)",
    "sshcfgparse": _CLIENT_ONLY,
    "cfgparse": "sshd -T's parsing of sshd_config",
    "cfgmatch": _SSHD_CONFIG + "Match blocks",
    "cfgmatchlisten": _SSHD_CONFIG + "Match blocks with PermitListen",
    "addrmatch": "sshd -T's Match address logic",
    "forcecommand": _SSHD_CONFIG + "ForceCommand",
    "keytype": "restarts sshd with host keys of each type and size; the gateway's host keys "
    "are its start-up configuration (keyscan covers every type)",
    "cert-hostkey": _SSHD_CONFIG + "HostCertificate",
    "cert-userkey": _SSHD_CONFIG + "TrustedUserCAKeys and AuthorizedPrincipalsFile "
    "(the gateway's certificates are tested in test_auth.py)",
    "cert-file": _SSHD_CONFIG + "TrustedUserCAKeys",
    "keys-command": _SSHD_CONFIG + "AuthorizedKeysCommand (--authorized-keys-url is tested in "
    "test_http_hooks.py)",
    "principals-command": _SSHD_CONFIG + "AuthorizedPrincipalsCommand",
    "integrity": "needs OpenSSH's modpipe, built from its source tree",
    "multipubkey": _SSHD_CONFIG + "AuthenticationMethods",
    "limit-keytype": _SSHD_CONFIG + "PubkeyAcceptedAlgorithms",
    "hostkey-agent": _SSHD_CONFIG + "HostKeyAgent",
    "hostkey-rotate": "restarts sshd with changed HostKey lines",
    "cfginclude": _CLIENT_ONLY,
    "servcfginclude": _SSHD_CONFIG + "Include",
    "allow-deny-users": _SSHD_CONFIG + "AllowUsers and DenyUsers",
    "authinfo": _SSHD_CONFIG + "ExposeAuthInfo",
    "hostbased": "host-based authentication; the gateway takes public keys",
    "channel-timeout": _SSHD_CONFIG + "ChannelTimeout",
    "connection-timeout": _SSHD_CONFIG + "UnusedConnectionTimeout",
}


@pytest.fixture(scope="module")
def regress(
    tmp_path_factory: pytest.TempPathFactory, sandbox_image: str, exec_path: str
) -> Iterator[RegressHarness]:
    obj = tmp_path_factory.mktemp("openssh-regress")
    harness = RegressHarness(obj, free_port())
    containers = Containers(sandbox_image, run_label="openssh-regress")
    # The session ID is the runner's login name (the scripts connect as $USER), the same in
    # every pytest-xdist worker: each worker's sandbox carries it under a label of its own,
    # which only its own gateways look at.
    session_label = f"sandbox-ssh.test.regress-{uuid.uuid4().hex[:8]}"
    extra = ["--exec-path", exec_path, "--session-label", session_label]
    try:
        sandbox = containers.start(
            labelled=False,
            labels={session_label: harness.user},
            extra=["-v", f"{obj}:{obj}", "-v", f"{SCRIPTS}:{SCRIPTS}:ro"],
        )
        with CliGateway(
            harness.host_key,
            *harness.gateway_args(),
            *extra,
            "--listen",
            f"127.0.0.1:{harness.port}",
        ) as gateway:
            harness.serve_through(int(str(sandbox.state()["Pid"])), extra)
            harness.gateway_log = gateway.log_text
            yield harness
    finally:
        harness.close()
        containers.remove_all()


@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", APPLICABLE)
def test_openssh_regress(regress: RegressHarness, name: str) -> None:
    log_before = len(regress.gateway_log())
    run = regress.run(name, timeout=600)
    assert run.returncode == 0, (
        f"{name} failed:\n{run.output}\n--- its log ---\n{run.log[-6000:]}"
        f"\n--- the end of ssh's log ---\n{run.ssh_log[-6000:]}"
        f"\n--- the gateway's log meanwhile ---\n{regress.gateway_log()[log_before:][-6000:]}"
    )


def test_every_script_of_the_suite_is_run_or_says_why_not() -> None:
    makefile = (SCRIPTS / "Makefile").read_text()
    listed = makefile.split("LTESTS=", 1)[1].split("\n\n", 1)[0]
    ltests = set(listed.replace("\\", " ").split())
    assert set(APPLICABLE) | set(NOT_APPLICABLE) == ltests
    assert not set(APPLICABLE) & set(NOT_APPLICABLE)
    vendored = {path.stem for path in Path(SCRIPTS).glob("*.sh")}
    helpers = {"test-exec", "sshd-log-wrapper", "scp-ssh-wrapper"}
    assert vendored - helpers == set(APPLICABLE)
