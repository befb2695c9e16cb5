"""Environment, user and home directory, as sshd would set them."""

from __future__ import annotations

from ..conftest import GatewayFactory
from ..support.containers import Containers
from ..support.ssh import SSHClient


class StaticEnv:
    def __init__(self, values: dict[str, str]) -> None:
        self.values = values

    async def get_env_vars_for_session(self, session_id: str) -> dict[str, str]:
        return dict(self.values)


def test_fetched_env_first_then_client_env_overrides(
    gateway_factory: GatewayFactory, containers: Containers
) -> None:
    fetched = {"ONLY_FETCHED": "from-platform", "BOTH": "from-platform"}
    gw = gateway_factory(env_var_fetcher=StaticEnv(fetched))
    sandbox = containers.start()
    result = gw.client.run(
        sandbox.session_id,
        'printf "%s|%s|%s\\n" "$ONLY_FETCHED" "$BOTH" "$ONLY_CLIENT"',
        options=["-o", "SetEnv=BOTH=from-client ONLY_CLIENT=client-only"],
    )
    assert result.stdout == b"from-platform|from-client|client-only\n", result.stderr


def test_sshd_variables_are_set(gateway_factory: GatewayFactory, containers: Containers) -> None:
    gw = gateway_factory()
    sandbox = containers.start()
    result = gw.client.run(
        sandbox.session_id,
        "for v in HOME USER LOGNAME SHELL PATH SSH_CONNECTION SSH_CLIENT; do "
        'printf "%s=%s\\n" "$v" "$(printenv $v)"; done; printenv TERM SSH_TTY || echo no-tty-vars',
    )
    env = dict(line.split("=", 1) for line in result.stdout.decode().splitlines() if "=" in line)
    assert env["HOME"] == "/root"
    assert env["USER"] == env["LOGNAME"] == "root"
    assert env["SHELL"] == "/bin/bash"
    assert "/usr/bin" in env["PATH"].split(":")
    client_host, client_port, server_host, server_port = env["SSH_CONNECTION"].split()
    assert client_host == server_host == "127.0.0.1"
    assert int(server_port) == gw.gateway.port
    assert env["SSH_CLIENT"] == f"{client_host} {client_port} {server_port}"
    assert b"no-tty-vars" in result.stdout


def test_client_cannot_override_identity_variables(
    gateway_factory: GatewayFactory, containers: Containers
) -> None:
    gw = gateway_factory()
    sandbox = containers.start()
    result = gw.client.run(
        sandbox.session_id, 'echo "$HOME $USER"', options=["-o", "SetEnv=HOME=/tmp USER=evil"]
    )
    assert result.stdout == b"/root root\n"


def test_runs_as_the_containers_configured_user(
    gateway_factory: GatewayFactory, containers: Containers
) -> None:
    gw = gateway_factory()
    sandbox = containers.start(user="dev")
    result = gw.client.run(
        sandbox.session_id, 'id -un; id -u; id -g; echo "$HOME"; pwd; echo "$SHELL"'
    )
    assert result.stdout.decode().splitlines() == [
        "dev",
        "1000",
        "1000",
        "/home/dev",
        "/home/dev",
        "/bin/bash",
    ]
    written = gw.client.run(sandbox.session_id, "touch ~/made-by-ssh && stat -c %U ~/made-by-ssh")
    assert written.stdout == b"dev\n"


def test_numeric_configured_user_resolves_to_its_name(
    gateway_factory: GatewayFactory, containers: Containers
) -> None:
    gw = gateway_factory()
    sandbox = containers.start(user="1000:1000")
    result = gw.client.run(sandbox.session_id, 'echo "$USER $HOME"; id -u')
    assert result.stdout == b"dev /home/dev\n1000\n"


class FixedUser:
    def __init__(self, username: str, uid: int, gid: int) -> None:
        from sandbox_ssh import UserInfo

        self.info = UserInfo(username=username, uid=uid, gid=gid)

    async def get_user_info(self, session_id: str):  # type: ignore[no-untyped-def]
        return self.info


def test_user_info_fetcher_decides_the_user(
    gateway_factory: GatewayFactory, containers: Containers
) -> None:
    gw = gateway_factory(user_info_fetcher=FixedUser("dev", 1000, 1000))
    sandbox = containers.start()  # configured user is root; the fetcher wins
    result = gw.client.run(sandbox.session_id, 'id -u; echo "$HOME"')
    assert result.stdout == b"1000\n/home/dev\n"


def test_no_user_info_fetcher_runs_as_root(
    gateway_factory: GatewayFactory, containers: Containers
) -> None:
    gw = gateway_factory(user_info_fetcher=None)
    sandbox = containers.start(user="dev")
    result = gw.client.run(sandbox.session_id, "id -u")
    assert result.stdout == b"0\n"


def test_uid_without_passwd_entry_gets_root_dir_as_home(
    gateway_factory: GatewayFactory, containers: Containers
) -> None:
    gw = gateway_factory(user_info_fetcher=FixedUser("ghost", 4242, 4242))
    sandbox = containers.start()
    result = gw.client.run(sandbox.session_id, 'pwd; echo "$USER $HOME"; id -u')
    assert result.stdout == b"/\nghost /\n4242\n"


def test_missing_home_falls_back_to_root_dir_with_a_notice(
    gateway_factory: GatewayFactory, containers: Containers
) -> None:
    gw = gateway_factory(user_info_fetcher=FixedUser("gone", 1001, 1001))
    sandbox = containers.start()
    sandbox.exec("sh", "-c", "echo 'gone:x:1001:1001::/home/gone:/bin/sh' >>/etc/passwd")
    result = gw.client.run(sandbox.session_id, 'pwd; echo "$HOME $SHELL"')
    assert result.stdout == b"/\n/home/gone /bin/sh\n"
    assert (
        result.stderr
        == b"Could not chdir to home directory /home/gone: No such file or directory\n"
    )


def test_the_ssh_users_home_is_the_session_users(ssh: SSHClient, containers: Containers) -> None:
    # The SSH username is the session ID, not a sandbox user: ~SESSION means the session
    # user's home (Ansible asks for it), unless the sandbox really has a user of that name.
    sandbox = containers.start(user="dev")
    session = sandbox.session_id
    result = ssh.run(session, f"echo ~{session} ~{session}/x; /bin/sh -c 'echo ~{session}'")
    assert result.stdout == b"/home/dev /home/dev/x\n/home/dev\n"
    named = containers.start(user="dev")
    named.exec(
        "sh", "-c", f"echo '{named.session_id}:x:2000:2000::/srv/named:/bin/sh' >> /etc/passwd"
    )
    assert ssh.run(named.session_id, f"echo ~{named.session_id}").stdout == b"/srv/named\n"
