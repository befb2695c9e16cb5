"""`ssh -tt` as a person uses it: a real pseudo-terminal on the client side too."""

from __future__ import annotations

import pexpect
import pytest

from ..support.containers import Container
from ..support.goclient import run_go_client, terminal_sizes
from ..support.ssh import SSHClient
from ..support.wait import wait_until

PROMPT = "PROMPT-READY> "


def spawn_terminal(
    ssh: SSHClient, session_id: str, rows: int = 40, cols: int = 120
) -> pexpect.spawn:
    argv = ssh.ssh_argv(session_id, options=["-tt"])
    child = pexpect.spawn(argv[0], argv[1:], dimensions=(rows, cols), timeout=20)
    child.sendline(f"export PS1='{PROMPT}'")
    child.expect_exact(PROMPT)
    child.expect_exact(PROMPT)
    return child


def test_terminal_size_resize_ctrl_c_and_exit_status(ssh: SSHClient, sandbox: Container) -> None:
    child = spawn_terminal(ssh, sandbox.session_id)
    child.sendline("stty size; echo term=$TERM tty=$SSH_TTY")
    child.expect(r"40 120\r\n")
    child.expect(r"term=\S+ tty=/dev/pts/\d+")
    child.expect_exact(PROMPT)

    child.setwinsize(30, 100)  # the client sends window-change on SIGWINCH
    child.sendline("stty size")
    child.expect(r"30 100\r\n")
    child.expect_exact(PROMPT)

    # Computed markers: the terminal's echo of the typed line cannot match them.
    child.sendline("echo sleeping-$((2*3)); sleep 300; echo not-$((1+1))-interrupted")
    child.expect_exact("sleeping-6")
    # Ctrl-C once sleep runs in the terminal's foreground group: sent while bash was still
    # between the two commands, it reached bash, and sleep then ran its 300 s.
    wait_until(lambda: "sleep 300" in sandbox.processes())
    child.sendcontrol("c")
    child.expect_exact(PROMPT)
    assert b"not-2-interrupted" not in (child.before or b"")
    child.sendline("echo $?")
    child.expect(r"130\r\n")

    child.sendline("exit 7")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 7


def test_line_editing_and_ctrl_p_reach_the_shell(ssh: SSHClient, sandbox: Container) -> None:
    child = spawn_terminal(ssh, sandbox.session_id)
    child.sendline("echo first-$((20+1))")
    child.expect(r"first-21\r\n")
    child.expect_exact(PROMPT)
    # Ctrl-P is bash's previous-history; Docker's default detach keys would eat it.
    child.sendcontrol("p")
    child.sendline("")
    child.expect(r"first-21\r\n")
    child.expect_exact(PROMPT)
    # Backspace edits the line in the sandbox's shell.
    child.send("echo abX\x7fc\r")
    child.expect(r"abc\r\n")
    child.expect_exact(PROMPT)
    child.sendline("exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_pty_exec_runs_the_command_on_a_terminal(ssh: SSHClient, sandbox: Container) -> None:
    result = ssh.run(sandbox.session_id, "test -t 0 && test -t 1 && echo tty", options=["-tt"])
    assert result.stdout == b"tty\r\n"
    assert result.returncode == 0


# Found with Go's x/crypto/ssh (the library under Terraform, Packer, Gitea, DevPod): its tools
# send pty-req, then window-change with their real size, then shell. The login step's stty
# put the pty-req's size back over the resize, in 26 of 27 tries; sshd's shell saw 100x100.
@pytest.mark.parametrize("mode", ["resize-early", "back-to-back"])
def test_regression_a_resize_sent_before_the_shell_request_was_lost(
    ssh: SSHClient, sandbox: Container, mode: str
) -> None:
    """``back-to-back``: pty-req, window-change and shell with no wait in between."""
    result = run_go_client(ssh.host, ssh.port, sandbox.session_id, mode)
    assert result.returncode == 0, result.stderr
    assert terminal_sizes(result.stdout) == ["100 100"], result.stdout


def test_regression_a_resize_sent_right_after_the_shell_reply_was_lost(
    ssh: SSHClient, sandbox: Container
) -> None:
    result = run_go_client(ssh.host, ssh.port, sandbox.session_id, "resize-after")
    assert result.returncode == 0, result.stderr
    assert terminal_sizes(result.stdout) == ["100 100"], result.stdout
