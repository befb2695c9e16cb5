import subprocess

import pytest

from sandbox_ssh._session.login import (
    Mode,
    expand_session_home,
    login_argv,
    stty_mode_arguments,
)
from sandbox_ssh.hooks import ROOT_USER, TerminalSize, UserInfo

from ..support.terminal import run_on_a_terminal


def test_character_and_flag_modes_become_stty_arguments() -> None:
    modes = {1: 3, 3: 127, 4: 21, 6: 255, 53: 0, 51: 1, 91: 1, 42: 1, 200: 7}
    assert stty_mode_arguments(modes) == [
        "intr",
        "^C",
        "erase",
        "^?",
        "kill",
        "^U",
        "eol",
        "undef",
        "iutf8",
        "icanon",
        "-echo",
        "cs8",
    ]


def test_unprintable_high_characters_are_left_undefined() -> None:
    assert stty_mode_arguments({2: 200}) == ["quit", "undef"]


def test_exec_argv_carries_the_command_as_one_argument() -> None:
    argv = login_argv(Mode.EXEC, UserInfo("dev", 1000, 1000), "echo 'a b'; exit 3")
    assert argv[:2] == ["/bin/sh", "-c"]
    assert argv[3:] == [
        "sandbox-ssh",
        "exec",
        "dev",
        "",
        "",
        "echo 'a b'; exit 3",
        "echo 'a b'; exit 3",
        "",
    ]


def test_terminal_size_and_modes_are_passed_for_a_pty() -> None:
    argv = login_argv(Mode.SHELL, ROOT_USER, None, TerminalSize(cols=100, rows=30), {53: 1})
    assert argv[3:] == ["sandbox-ssh", "shell", "root", "30 100", "echo"]  # size: a fallback


def test_regression_the_login_step_undid_a_resize_sent_before_it_ran() -> None:
    """The client's pty-req said 40x80, then a window-change 100x100 that the gateway had
    already applied: the login step's `stty rows 40 cols 80` put the old size back."""
    argv = login_argv(Mode.EXEC, ROOT_USER, "stty size", TerminalSize(cols=80, rows=40), {53: 1})
    assert run_on_a_terminal(argv, rows=100, cols=100).endswith("100 100\n")


def test_a_terminal_left_without_a_size_gets_the_pty_requests() -> None:
    argv = login_argv(Mode.EXEC, ROOT_USER, "stty size", TerminalSize(cols=80, rows=40), {53: 1})
    assert run_on_a_terminal(argv, rows=0, cols=0).endswith("40 80\n")


def test_login_script_is_valid_posix_sh() -> None:
    script = login_argv(Mode.SHELL, ROOT_USER, None)[2]
    for shell in ("sh", "bash"):
        assert subprocess.run([shell, "-n", "-c", script]).returncode == 0


def test_direct_mode_runs_argv_unchanged_as_the_current_user() -> None:
    argv = login_argv(Mode.DIRECT, ROOT_USER, ["printf", "%s|", "$HOME", "a b"])
    result = subprocess.run(argv, capture_output=True, text=True)
    assert result.stdout == "$HOME|a b|"


@pytest.mark.parametrize(
    ("command", "expanded"),
    [
        # Ansible's probe for the SSH user's home, as it sends it.
        ("/bin/sh -c 'echo ~t-1 && sleep 0'", "/bin/sh -c 'echo ~ && sleep 0'"),
        ("ls ~t-1/.ansible/tmp", "ls ~/.ansible/tmp"),
        ("cd ~t-1; pwd", "cd ~; pwd"),
        ("X=~t-1", "X=~"),
        ("~t-1", "~"),
        # Not a tilde-prefix for that name: left alone.
        ("echo a~t-1", "echo a~t-1"),
        ("echo ~t-10", "echo ~t-10"),
        ("echo ~root", "echo ~root"),
    ],
)
def test_the_ssh_users_home_is_the_session_users(command: str, expanded: str) -> None:
    assert expand_session_home(command, "t-1") == expanded
