"""OpenSSH's own regression scripts (regress/, tag V_9_2_P1) run against a gateway.

The scripts are vendored in tests/regress/openssh; they drive the real `ssh`, `scp`,
`sftp`, `ssh-add` and `ssh-keygen`. They run in the sandbox's network namespace
(the container itself has no network), so that, as with sshd, the client and the
server's side share a loopback: ``-R`` listeners the gateway opens in the sandbox
are reached by the scripts, and ``localhost:$PORT`` dialled from the sandbox (by
``-L``, ``-D`` or a nested ``ssh``) is the gateway, through a relay. Where the
scripts would start `sshd`, a stand-in answers instead:

- ``sshd -i`` (the ProxyCommand of ``$OBJ/ssh_proxy``) relays stdio to the
  gateway through a Unix socket in ``$OBJ``, which the sandbox sees too (``$OBJ``
  is bind-mounted at the same path);
- ``sshd -t`` checks nothing; the daemon form writes the pid file of a process
  that waits for SIGTERM, since the gateway already listens on ``$PORT``;
- ``SetEnv`` is the one sshd directive translated: each distinct set gets a
  gateway of its own, started with ``--set-env``;
- ``$SFTPSERVER`` (run by ``sftp -D`` and ``scp -D``) is ``ssh -s sftp`` through
  the gateway, and the scp scripts' ssh wrapper runs real ssh in its normal mode.

The SSH user is the runner's login name (root here), which is the session ID.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .system import ensure_commands

SCRIPTS = Path(__file__).resolve().parents[1] / "regress" / "openssh"

# The preprocessor symbols of Debian's OpenSSH build that the scripts ask config.h about.
_CONFIG_H = """\
#define WITH_OPENSSL 1
#define OPENSSL_HAS_ECC 1
#define OPENSSL_HAS_NISTP521 1
#define HAVE_EVP_SHA256 1
"""

_SSHD_STAND_IN = """\
#!/bin/sh
# sshd stand-in (tests/support/openssh_regress.py): -i relays to the gateway.
obj={obj}
mode=daemon
config=
while [ $# -gt 0 ]; do
\tcase "$1" in
\t-i) mode=inetd ;;
\t-t|-T|-G) mode=check ;;
\t-f) config=$2; shift ;;
\t-f*) config=${{1#-f}} ;;
\tesac
\tshift
done
case $mode in
check)
\texit 0 ;;
inetd)
\tsetenv=$(sed -n 's/^[[:space:]]*[Ss][Ee][Tt][Ee][Nn][Vv][[:space:]=]*//p' "$config")
\tif [ -z "$setenv" ]; then
\t\texec socat STDIO UNIX-CONNECT:$obj/gateway.sock
\tfi
\tkey=$(printf '%s' "$setenv" | cksum | cut -d' ' -f1)
\tif [ ! -S "$obj/gateway-$key.sock" ]; then
\t\t"$obj/start-gateway" "$obj/gateway-$key.sock" $setenv >>"$obj/gateways.log" 2>&1 || exit 255
\tfi
\texec socat STDIO UNIX-CONNECT:$obj/gateway-$key.sock ;;
esac
pidfile=$(awk 'tolower($1) == "pidfile" {{ print $2 }}' "$config")
sh -c 'trap "rm -f $0; exit 0" TERM; echo $$ >"$0"; while :; do sleep 1; done' "$pidfile" \\
\t</dev/null >/dev/null 2>&1 &
"""

_SFTP_SERVER_STAND_IN = """\
#!/bin/sh
# sftp-server stand-in: the sandbox's sftp-server, through the gateway.
exec ssh -F {obj}/ssh_proxy -oLogLevel=ERROR -s somehost sftp
"""

# Starts one more gateway, for a set of SetEnv values (argv: socket path, NAME=VALUE...),
# and returns once its relay socket exists.
_START_GATEWAY = """\
#!{python}
import re, subprocess, sys, time
from pathlib import Path
sock, assignments = Path(sys.argv[1]), sys.argv[2:]
args = {base_args!r}
for assignment in assignments:
    args += ["--set-env", assignment.strip("\\"'")]
log = sock.with_suffix(".log")
with log.open("wb") as output:
    gateway = subprocess.Popen(
        [{python!r}, "-m", "sandbox_ssh", "serve", "--listen", "127.0.0.1:0", *args],
        stdin=subprocess.DEVNULL, stdout=output, stderr=output, start_new_session=True,
    )
with open({pids!r}, "a") as pids:
    pids.write(f"{{gateway.pid}}\\n")
deadline = time.monotonic() + 60
while not (match := re.search(r"listening on \\S+:(\\d+)", log.read_text())):
    if gateway.poll() is not None or time.monotonic() > deadline:
        sys.exit("sandbox-ssh serve did not start: " + log.read_text())
    time.sleep(0.05)
relay = subprocess.Popen(
    ["socat", f"UNIX-LISTEN:{{sock}},fork,mode=666", f"TCP:127.0.0.1:{{match.group(1)}}"],
    stdin=subprocess.DEVNULL, start_new_session=True,
)
with open({pids!r}, "a") as pids:
    pids.write(f"{{relay.pid}}\\n")
while not sock.exists():
    time.sleep(0.01)
"""


def _client_query(what: str) -> list[str]:
    """``ssh -Q WHAT``: the names this OpenSSH client implements."""
    return subprocess.run(
        ["ssh", "-Q", what], capture_output=True, text=True, check=True
    ).stdout.split()


@dataclass
class RegressRun:
    returncode: int
    output: str
    log: str
    # The clients' own debug log (LogLevel DEBUG3), which test-exec.sh keeps on failure.
    ssh_log: str


class RegressHarness:
    """One ``$OBJ`` directory, with the stand-ins that point the scripts at a gateway."""

    def __init__(self, obj: Path, port: int) -> None:
        ensure_commands("socat", "nc.openbsd")
        self.obj = obj
        self.port = port
        self.user = subprocess.run(
            ["id", "-un"], capture_output=True, text=True, check=True
        ).stdout.strip()
        self._relays: list[subprocess.Popen[bytes]] = []
        # The main gateway's log so far, for a failing script's report.
        self.gateway_log: Callable[[], str] = lambda: ""
        self._netns: list[str] = []
        (obj / "build").mkdir(parents=True, exist_ok=True)
        (obj / "build" / "config.h").write_text(_CONFIG_H)
        keys = obj / "keys"
        keys.mkdir(exist_ok=True)
        (keys / self.user).unlink(missing_ok=True)
        (keys / self.user).symlink_to(obj / f"authorized_keys_{self.user}")
        (obj / f"authorized_keys_{self.user}").touch()
        # test-exec.sh makes a key of every type the client knows, unless it exists, and
        # trusts each as a host key; the gateway gets them all, as sshd_proxy lists them.
        self.host_key_types = [
            name for name in _client_query("key-plain") if not name.startswith("sk-")
        ]
        for key_type in self.host_key_types:
            key = obj / key_type
            if not key.exists():
                subprocess.run(
                    ["ssh-keygen", "-q", "-N", "", "-t", key_type, "-f", str(key)], check=True
                )
        self._script("sshd", _SSHD_STAND_IN.format(obj=obj))
        self._script("sftp-server", _SFTP_SERVER_STAND_IN.format(obj=obj))
        self._script("mkdtemp", '#!/bin/sh\nexec mktemp -d "${TMPDIR:-/tmp}/$1"\n')
        (obj / "netcat").unlink(missing_ok=True)
        (obj / "netcat").symlink_to("/usr/bin/nc.openbsd")

    @property
    def host_key(self) -> Path:
        return self.obj / self.host_key_types[0]

    def gateway_args(self) -> list[str]:
        """What every gateway of this run is started with, but for --listen and --host-key."""
        extra_keys = [str(self.obj / name) for name in self.host_key_types[1:]]
        return [
            *(arg for key in extra_keys for arg in ("--host-key", key)),
            # The scripts enable in sshd each algorithm they try; this gateway offers all of
            # them from the start, instead of its audited defaults (SECURITY.md).
            "--kex-algorithms",
            ",".join(_client_query("kex")),
            "--ciphers",
            ",".join(_client_query("cipher")),
            "--macs",
            ",".join(_client_query("mac")),
            "--host-key-algorithms",
            ",".join(name for name in _client_query("HostKeyAlgorithms") if "-cert-" not in name),
            "--auth",
            "publickey",
            "--authorized-keys-dir",
            str(self.obj / "keys"),
            "--accept-env",
            "_XXX_TEST_*",
            "--accept-env",
            "_XXX_TEST",
        ]

    def serve_through(self, sandbox_pid: int, extra_gateway_args: Sequence[str]) -> None:
        """Relay the stand-in's socket, and ``localhost:port`` in the sandbox's network
        namespace, to the gateway on ``port``; write start-gateway."""
        self._netns = ["nsenter", "-t", str(sandbox_pid), "-n"]
        base = ["--host-key", str(self.host_key), *self.gateway_args(), *extra_gateway_args]
        self._script(
            "start-gateway",
            _START_GATEWAY.format(
                python=sys.executable, base_args=base, pids=str(self.obj / "gateways.pids")
            ),
        )
        sock = self.obj / "gateway.sock"
        sock.unlink(missing_ok=True)
        self._relays = [
            subprocess.Popen(
                ["socat", f"UNIX-LISTEN:{sock},fork,mode=666", f"TCP:127.0.0.1:{self.port}"],
                stdin=subprocess.DEVNULL,
            ),
            subprocess.Popen(
                [
                    *self._netns,
                    "socat",
                    f"TCP-LISTEN:{self.port},bind=127.0.0.1,fork,reuseaddr",
                    f"UNIX-CONNECT:{sock}",
                ],
                stdin=subprocess.DEVNULL,
            ),
        ]

    def run(self, name: str, timeout: float) -> RegressRun:
        env = {
            **os.environ,
            "TEST_SHELL": "sh",
            "TEST_SSH_SSHD": str(self.obj / "sshd"),
            "TEST_SSH_SFTPSERVER": str(self.obj / "sftp-server"),
            "TEST_SSH_PORT": str(self.port),
            "TEST_SSH_UNSAFE_PERMISSIONS": "1",
            "BUILDDIR": str(self.obj / "build"),
            "OBJ": str(self.obj),
        }
        env.pop("SSH_AUTH_SOCK", None)
        result = subprocess.run(
            [
                *self._netns,
                "sh",
                str(SCRIPTS / "test-exec.sh"),
                str(self.obj),
                str(SCRIPTS / f"{name}.sh"),
            ],
            cwd=self.obj,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            start_new_session=True,
        )
        return RegressRun(
            result.returncode,
            (result.stdout + result.stderr).decode(errors="replace"),
            log=self._take("failed-regress.log"),
            ssh_log=self._take("failed-ssh.log"),
        )

    def _take(self, name: str) -> str:
        """A log test-exec.sh keeps on failure (appending), read and removed for the next run."""
        log = self.obj / name
        text = log.read_text(errors="replace") if log.exists() else ""
        log.unlink(missing_ok=True)
        return text

    def close(self) -> None:
        for relay in self._relays:
            relay.terminate()
            relay.wait(10)
        pids = self.obj / "gateways.pids"
        if pids.exists():
            for pid in pids.read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(int(pid), signal.SIGTERM)

    def _script(self, name: str, text: str) -> None:
        path = self.obj / name
        path.write_text(text)
        path.chmod(0o755)
