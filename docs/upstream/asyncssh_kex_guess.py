"""Minimal reproduction: asyncssh mishandles a client's wrongly guessed key-exchange packet.

RFC 4253 7.1: a guess is wrong when the two sides' *first* key exchange (or host key)
algorithms differ, and then the guessed packet is ignored and the client sends its
packet again. asyncssh instead compares the *negotiated* algorithm with the client's
first, so when the server prefers another algorithm that the client lacks, it keeps
the guessed packet and then fails on the repeated one ("Key exchange not in progress").

Dropbear guesses: with the server preferring mlkem768x25519-sha256 (which Dropbear
2022 lacks) over curve25519-sha256 (Dropbear's first), every connection fails.

    python3 asyncssh_kex_guess.py    # needs asyncssh and Dropbear's dbclient
"""

import asyncio
import subprocess

import asyncssh


class Server(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return False


def answer(process: asyncssh.SSHServerProcess) -> None:
    process.stdout.write("answered\n")
    process.exit(0)


async def main() -> None:
    for kex_algs in (["curve25519-sha256"], ["mlkem768x25519-sha256", "curve25519-sha256"]):
        server = await asyncssh.create_server(
            Server,
            "127.0.0.1",
            0,
            server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")],
            kex_algs=kex_algs,
            process_factory=answer,
        )
        port = server.sockets[0].getsockname()[1]
        client = await asyncio.create_subprocess_exec(
            "dbclient", "-y", "-p", str(port), "user@127.0.0.1", "true",
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        stdout, stderr = await client.communicate()
        # dbclient exits 0 even when the server drops it: look at what came back.
        outcome = "ok" if stdout == b"answered\n" else stderr.decode().strip().splitlines()[-1]
        print(f"server kex {kex_algs}: dbclient {outcome}")
        server.close()


try:
    import uvloop  # the failure shows with uvloop (as sandbox-ssh runs) more than without

    uvloop.run(main())
except ImportError:
    asyncio.run(main())
