"""Minimal reproduction: asyncssh's SSHForwarder loses the close after a half-close.

An asyncssh server whose connection_requested() returns True (asyncssh dials the
target itself and relays with SSHForwarder), a local service that writes one line
and closes, and OpenSSH's `ssh -W` with stdin at EOF. Each run should print the
line and exit at once; some runs print the line and then hang until killed.

    python3 asyncssh_forwarder_half_close.py [RUNS]

Needs only asyncssh and the OpenSSH client. Uses loopback ports only.
"""

import asyncio
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import asyncssh


def banner_service() -> int:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)

    def serve() -> None:
        while True:
            conn, _ = listener.accept()
            conn.sendall(b"hello from the service\n")
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return int(listener.getsockname()[1])


class Server(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return False  # no authentication: this is only about forwarding

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str, orig_port: int) -> bool:
        return True  # asyncssh connects and relays with SSHForwarder


async def start_server(workdir: Path) -> int:
    key = asyncssh.generate_private_key("ssh-ed25519")
    key.write_private_key(workdir / "host_key")
    server = await asyncssh.create_server(
        Server, "127.0.0.1", 0, server_host_keys=[str(workdir / "host_key")]
    )
    return int(server.sockets[0].getsockname()[1])


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    service_port = banner_service()
    workdir = Path(tempfile.mkdtemp())
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    ssh_port = asyncio.run_coroutine_threadsafe(start_server(workdir), loop).result()
    hung = 0
    for run in range(runs):
        started = time.monotonic()
        try:
            result = subprocess.run(
                ["ssh", "-F", "/dev/null", "-o", "StrictHostKeyChecking=no",
                 "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
                 "-p", str(ssh_port), "-W", f"localhost:{service_port}", "user@127.0.0.1"],
                stdin=subprocess.DEVNULL, capture_output=True, timeout=3,
            )
            outcome = f"exit {result.returncode}, {result.stdout!r}"
        except subprocess.TimeoutExpired as expired:
            hung += 1
            outcome = f"HUNG after printing {expired.stdout!r}"
        print(f"run {run + 1}: {outcome} ({time.monotonic() - started:.2f}s)")
    print(f"asyncssh {asyncssh.__version__}: {hung} of {runs} runs hung")


if __name__ == "__main__":
    main()
