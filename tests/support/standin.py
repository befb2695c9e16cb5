"""A stand-in for VS Code's server, run *inside* the sandbox by the tests (python3 only).

Every connection is greeted with the token first (bytes sent before the client
writes), then takes one command line:
  echo               echo until EOF, then half-close
  download N SEED    send N bytes from random.Random(SEED), then close
  upload             read until EOF, reply with the sha256 of what came
With --parent-pid it exits once that process is gone, like VS Code's
`--parent-process-id`.
"""

import argparse
import hashlib
import os
import random
import socket
import sys
import threading
import time


def serve(conn: socket.socket, token: str) -> None:
    with conn:
        conn.sendall(f"token=={token}==\n".encode())
        line = b""
        while not line.endswith(b"\n"):
            part = conn.recv(1)
            if not part:
                return
            line += part
        command = line.decode().split()
        if command[0] == "echo":
            while data := conn.recv(65536):
                conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
        elif command[0] == "download":
            remaining, generator = int(command[1]), random.Random(int(command[2]))
            while remaining > 0:
                size = min(remaining, 1 << 20)
                conn.sendall(generator.randbytes(size))
                remaining -= size
        elif command[0] == "upload":
            digest = hashlib.sha256()
            while data := conn.recv(1 << 20):
                digest.update(data)
            conn.sendall(digest.hexdigest().encode() + b"\n")


def watch_parent(pid: int) -> None:
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            os._exit(0)
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--unix")
    parser.add_argument("--token", required=True)
    parser.add_argument("--parent-pid", type=int)
    args = parser.parse_args()
    if args.unix:
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(args.unix)
        where = args.unix
    else:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        where = str(listener.getsockname()[1])
    listener.listen(128)
    if args.parent_pid:
        threading.Thread(target=watch_parent, args=(args.parent_pid,), daemon=True).start()
    print(f"listeningOn=={where}==", flush=True)
    sys.stdout.close()
    os.close(1)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn, args.token), daemon=True).start()


if __name__ == "__main__":
    main()
