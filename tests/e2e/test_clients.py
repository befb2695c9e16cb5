"""Clients beyond OpenSSH, each on its main path, with publickey authentication.

Each client is the real one, installed by the test from Debian, PyPI or npm:
PuTTY (plink, pscp, psftp), Dropbear's dbclient, paramiko, rclone (Go's
x/crypto/ssh), curl (libssh2), git, Ansible, sshfs and Node's ssh2.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pytest

from ..conftest import GatewayFactory
from ..support import halfclose
from ..support.containers import Container, Containers, docker
from ..support.gateway import InProcessGateway
from ..support.goclient import run_go_client
from ..support.ssh import SSHClient
from ..support.system import ensure_commands
from ..support.wait import wait_until

SSH2_CLIENT = Path(__file__).parents[1] / "support" / "ssh2_client.js"
NODE_CACHE = Path.home() / ".cache" / "sandbox-ssh-tests" / "node-ssh2"
HALFCLOSE_IN_SANDBOX = "/usr/local/lib/sandbox-ssh-halfclose.py"


@dataclass
class Keyed:
    """A gateway that wants a key, a sandbox whose key it is, and that key in OpenSSH format."""

    gateway: InProcessGateway
    sandbox: Container
    key: Path
    fingerprint: str  # SHA256:..., of the gateway's host key

    @property
    def port(self) -> str:
        return str(self.gateway.port)

    @property
    def user(self) -> str:
        return self.sandbox.session_id

    def ssh_options(self) -> list[str]:
        return [
            "-F",
            "/dev/null",
            "-i",
            str(self.key),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
        ]


@pytest.fixture
def keyed(gateway_factory: GatewayFactory, containers: Containers, tmp_path: Path) -> Keyed:
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    sandbox = containers.start(user="dev")
    keys = tmp_path / "authorized"
    keys.mkdir()
    (keys / sandbox.session_id).write_text(Path(f"{key}.pub").read_text())
    gw = gateway_factory(auth="publickey", authorized_keys_dir=keys)
    host_key_pub = f"{gw.gateway.host_key_path}.pub"
    listing = subprocess.run(["ssh-keygen", "-lf", host_key_pub], capture_output=True, text=True)
    return Keyed(gw.gateway, sandbox, key, listing.stdout.split()[1])


def run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, capture_output=True, timeout=120, **kwargs)  # type: ignore[call-overload, no-any-return]


def serve_in_sandbox(sandbox: Container, *where: str) -> None:
    """The half-close test service (mode banner) inside the sandbox."""
    source = Path(halfclose.__file__).read_bytes()
    command = f"cat > {HALFCLOSE_IN_SANDBOX}"
    docker("exec", "-i", "-u", "0", sandbox.id, "sh", "-c", command, input=source)
    out = f"/tmp/banner-{abs(hash(where))}.out"
    service = f"python3 {HALFCLOSE_IN_SANDBOX} serve {' '.join(where)} --mode banner > {out} 2>&1"
    docker("exec", "-d", sandbox.id, "sh", "-c", service)
    wait_until(lambda: "listening" in sandbox.exec("cat", out, check=False))


def test_putty_plink_pscp_and_psftp(keyed: Keyed, tmp_path: Path) -> None:
    ensure_commands("plink", "pscp", "psftp", "puttygen")
    ppk = tmp_path / "key.ppk"
    run(["puttygen", str(keyed.key), "-O", "private", "-o", str(ppk)], check=True)
    common = ["-batch", "-hostkey", keyed.fingerprint, "-P", keyed.port, "-i", str(ppk)]
    target = f"{keyed.user}@127.0.0.1"
    result = run(["plink", *common, target, "echo out; echo err >&2; exit 7"])
    assert (result.returncode, result.stdout, result.stderr) == (7, b"out\n", b"err\n")
    assert run(["plink", *common, target, "cat"], input=b"piped\n").stdout == b"piped\n"
    local = tmp_path / "up.txt"
    local.write_bytes(b"through pscp\n")
    assert run(["pscp", *common, str(local), f"{target}:/home/dev/up.txt"]).returncode == 0
    back = tmp_path / "down.txt"
    assert run(["pscp", *common, f"{target}:/home/dev/up.txt", str(back)]).returncode == 0
    assert back.read_bytes() == b"through pscp\n"
    batch = tmp_path / "batch"
    batch.write_text(f"cd /home/dev\nput {local} psftp.txt\nls\n")
    listing = run(["psftp", *common, "-b", str(batch), target])
    assert listing.returncode == 0, listing.stderr
    assert keyed.sandbox.exec("cat", "/home/dev/psftp.txt") == "through pscp\n"
    assert keyed.sandbox.exec("stat", "-c", "%U", "/home/dev/psftp.txt").strip() == "dev"


def test_dropbear_dbclient(keyed: Keyed, tmp_path: Path) -> None:
    # Regression: Dropbear guesses its key exchange (curve25519); with ML-KEM first on the
    # gateway the guess is wrong by RFC 4253, and asyncssh dropped the connection.
    ensure_commands("dbclient", "dropbearconvert")
    key = tmp_path / "key.dropbear"
    run(["dropbearconvert", "openssh", "dropbear", str(keyed.key), str(key)], check=True)
    argv = ["dbclient", "-y", "-p", keyed.port, "-i", str(key), f"{keyed.user}@127.0.0.1"]
    result = run([*argv, "echo out; echo err >&2; exit 5"])
    assert (result.returncode, result.stdout) == (5, b"out\n")
    assert result.stderr.endswith(b"err\n")
    assert run([*argv, "cat"], input=b"through dropbear\n").stdout == b"through dropbear\n"


def test_paramiko_exec_stdin_sftp_and_pty(keyed: Keyed) -> None:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect(
        "127.0.0.1",
        keyed.gateway.port,
        username=keyed.user,
        key_filename=str(keyed.key),
        look_for_keys=False,
        allow_agent=False,
    )
    try:
        stdin, stdout, stderr = client.exec_command("cat; echo err >&2; exit 4")
        stdin.write(b"from paramiko\n")
        stdin.channel.shutdown_write()
        assert stdout.read() == b"from paramiko\n"
        assert stderr.read() == b"err\n"
        assert stdout.channel.recv_exit_status() == 4
        with client.open_sftp() as sftp:
            with sftp.open("/home/dev/paramiko.txt", "w") as remote:
                remote.write(b"sftp through paramiko")
            with sftp.open("/home/dev/paramiko.txt") as remote:
                assert remote.read() == b"sftp through paramiko"
            assert "paramiko.txt" in sftp.listdir("/home/dev")
        _, stdout, _ = client.exec_command("tty; stty size", get_pty=True)
        lines = stdout.read().decode().split()
        assert lines[0].startswith("/dev/pts/") and lines[1:] == ["24", "80"]
    finally:
        client.close()


def test_rclone_sftp_backend(keyed: Keyed, tmp_path: Path) -> None:
    ensure_commands("rclone")
    remote = [
        "--sftp-host",
        "127.0.0.1",
        "--sftp-port",
        keyed.port,
        "--sftp-user",
        keyed.user,
        "--sftp-key-file",
        str(keyed.key),
        "--config",
        str(tmp_path / "rclone.conf"),
    ]
    local = tmp_path / "r.txt"
    local.write_bytes(b"through rclone\n")
    copied = run(["rclone", "copyto", str(local), ":sftp:/home/dev/r.txt", *remote])
    assert copied.returncode == 0, copied.stderr
    assert run(["rclone", "cat", ":sftp:/home/dev/r.txt", *remote]).stdout == b"through rclone\n"
    listing = run(["rclone", "lsf", ":sftp:/home/dev/", *remote])
    assert b"r.txt" in listing.stdout.split()


def test_curl_sftp_with_libssh2(keyed: Keyed, tmp_path: Path) -> None:
    # libssh2 1.10 has neither ETM MACs nor AEAD ciphers: it needs hmac-sha2-256 with CTR.
    ensure_commands("curl")
    auth = ["-sS", "-k", "--key", str(keyed.key), "--pubkey", f"{keyed.key}.pub"]
    url = f"sftp://{keyed.user}@127.0.0.1:{keyed.port}/home/dev/curl.txt"
    local = tmp_path / "curl.txt"
    local.write_bytes(b"through curl\n")
    uploaded = run(["curl", *auth, "-T", str(local), url])
    assert uploaded.returncode == 0, uploaded.stderr
    assert run(["curl", *auth, url]).stdout == b"through curl\n"


def test_git_clone_and_push_over_ssh(keyed: Keyed, tmp_path: Path) -> None:
    ensure_commands("git")
    keyed.sandbox.exec("git", "init", "-q", "--bare", "/home/dev/repo.git", user="dev")
    env = {**os.environ, "GIT_SSH_COMMAND": " ".join(["ssh", *keyed.ssh_options()])}
    url = f"ssh://{keyed.user}@127.0.0.1:{keyed.port}/home/dev/repo.git"
    clone = tmp_path / "clone"
    assert run(["git", "clone", "-q", url, str(clone)], env=env).returncode == 0
    (clone / "README").write_text("pushed through the gateway\n")
    git = ["git", "-C", str(clone), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    run([*git, "add", "README"], check=True)
    run([*git, "commit", "-qm", "first"], check=True)
    pushed = run([*git, "push", "-q", "origin", "HEAD:main"], env=env)
    assert pushed.returncode == 0, pushed.stderr
    log = keyed.sandbox.exec("git", "--git-dir", "/home/dev/repo.git", "log", "--format=%s", "main")
    assert log == "first\n"
    again = tmp_path / "again"
    assert run(["git", "clone", "-q", "-b", "main", url, str(again)], env=env).returncode == 0
    assert (again / "README").read_text() == "pushed through the gateway\n"


@pytest.mark.parametrize("transfer", ["smart", "scp"])
def test_ansible_ping_copy_and_command(keyed: Keyed, tmp_path: Path, transfer: str) -> None:
    ansible = Path(sys.executable).with_name("ansible")
    inventory = tmp_path / "inventory.ini"
    common = " ".join(keyed.ssh_options()[2:])  # without -F and -i, which Ansible sets
    inventory.write_text(
        "[sandbox]\n"
        f"target ansible_host=127.0.0.1 ansible_port={keyed.port} ansible_user={keyed.user} "
        f"ansible_ssh_private_key_file={keyed.key} ansible_python_interpreter=/usr/bin/python3 "
        f"ansible_ssh_transfer_method={transfer} ansible_ssh_common_args='{common}'\n"
    )
    env = {
        **os.environ,
        "ANSIBLE_HOST_KEY_CHECKING": "False",
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-local"),
        "ANSIBLE_HOME": str(tmp_path / "ansible-home"),
    }
    source = tmp_path / "source.txt"
    source.write_text("copied by ansible\n")

    def ansible_run(*args: str) -> subprocess.CompletedProcess[bytes]:
        result = run([str(ansible), "-i", str(inventory), "all", *args], env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        return result

    assert b'"ping": "pong"' in ansible_run("-m", "ping").stdout
    ansible_run("-m", "copy", "-a", f"src={source} dest=/home/dev/from-ansible.txt")
    assert b"copied by ansible" in ansible_run("-m", "command", "-a", "cat from-ansible.txt").stdout
    # Ansible asks for `~SESSION`, the SSH user's home: it is the session user's, and no
    # directory literally named after the session appears.
    home = keyed.sandbox.exec("ls", "-A", "/home/dev").split()
    assert f"~{keyed.user}" not in home and ".ansible" in home


def test_sshfs_mount(keyed: Keyed, tmp_path: Path) -> None:
    if not Path("/dev/fuse").exists():
        pytest.skip("sshfs needs /dev/fuse, which this machine does not have")
    ensure_commands("sshfs", "fusermount3")
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    options = ",".join(
        [
            f"IdentityFile={keyed.key}",
            "StrictHostKeyChecking=no",
            "UserKnownHostsFile=/dev/null",
            f"port={keyed.port}",
        ]
    )
    source = f"{keyed.user}@127.0.0.1:/home/dev"
    mounted = run(["sshfs", "-o", options, source, str(mountpoint)])
    assert mounted.returncode == 0, mounted.stderr
    try:
        (mountpoint / "via-sshfs.txt").write_text("written through sshfs\n")
        assert "via-sshfs.txt" in os.listdir(mountpoint)
    finally:
        run(["fusermount3", "-u", str(mountpoint)], check=True)
    assert keyed.sandbox.exec("cat", "/home/dev/via-sshfs.txt") == "written through sshfs\n"


def node_ssh2() -> Path:
    """Node's ssh2 from npm, installed once into a cache folder."""
    ensure_commands("node", "npm")
    if not (NODE_CACHE / "node_modules" / "ssh2").is_dir():
        NODE_CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["npm", "install", "--silent", "--prefix", str(NODE_CACHE), "ssh2@1"],
            check=True,
            timeout=300,
        )
    return NODE_CACHE


def test_node_ssh2_exec_sftp_and_forwarding(keyed: Keyed) -> None:
    modules = node_ssh2()
    serve_in_sandbox(keyed.sandbox, "--tcp", "7001")
    serve_in_sandbox(keyed.sandbox, "--unix", "/tmp/ssh2.sock")
    result = run(
        [
            "node",
            str(SSH2_CLIENT),
            keyed.port,
            keyed.user,
            str(keyed.key),
            "7001",
            "/tmp/ssh2.sock",
        ],
        env={**os.environ, "NODE_PATH": str(modules / "node_modules")},
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["exec"] == {"code": 3, "so": "out\npiped-in\n", "se": "err\n"}
    assert seen["sftp"] == "from node"
    assert seen["forwardOut"] == "banner\n"  # direct-tcpip
    assert seen["streamlocal"] == "banner\n"  # direct-streamlocal@openssh.com


def test_ssh_audit_finds_nothing_to_fail(keyed: Keyed) -> None:
    audit = shutil.which("ssh-audit", path=str(Path(sys.executable).parent))
    assert audit is not None
    result = run([audit, "-n", "-p", keyed.port, "127.0.0.1"])
    report = result.stdout.decode()
    assert "(kex) mlkem768x25519-sha256" in report
    assert report.index("(kex) mlkem768x25519-sha256") < report.index("(kex) sntrup761x25519")
    assert [line for line in report.splitlines() if "[fail]" in line] == []
    assert "ecdh-sha2-nistp" not in report


def test_go_x_crypto_ssh_exec(ssh: SSHClient, sandbox: Container) -> None:
    """golang.org/x/crypto/ssh 0.4 (Debian's), as Terraform, Packer, Gitea and DevPod use it."""
    result = run_go_client(
        ssh.host, ssh.port, sandbox.session_id, "exec", "echo out; echo err >&2; exit 5"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ['stdout="out\\n"', 'stderr="err\\n"', "status=5"]
