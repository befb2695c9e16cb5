"""Services and clients that close in every order, for forwarded connections (python3 only).

Run inside a sandbox or on the test host, as a file:

  halfclose.py serve  (--tcp PORT | --unix PATH) --mode MODE [--log FILE]
  halfclose.py client (--tcp PORT | --unix PATH) --mode MODE --runs N

Modes, as the service plays them:
  banner  write a line, close (the client sent EOF first and nothing else)
  early   write a line and half-close at once, then read all the client sends, log its
          length and sha256, close (the service closes first, the client still sending)
  reply   read the request until EOF, then send 1 MiB and close (the client half-closed
          first and reads a long reply)

The client prints one JSON line per run: {"ok": bool, "seconds": float, "detail": str}.
"""

import argparse
import hashlib
import json
import os
import random
import socket
import sys
import threading
import time
from typing import TextIO

BANNER = b"banner\n"
EARLY = b"early\n"
REPLY_SIZE = 1 << 20
UPLOAD = bytes(random.Random(7).randbytes(256 * 1024))


def reply_for(request: bytes) -> bytes:
    return random.Random(hashlib.sha256(request).hexdigest()).randbytes(REPLY_SIZE)


def read_all(conn: socket.socket) -> bytes:
    chunks: list[bytes] = []
    while True:
        data = conn.recv(1 << 16)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def serve_one(conn: socket.socket, mode: str, log: "TextIO") -> None:
    with conn:
        if mode == "banner":
            conn.sendall(BANNER)
        elif mode == "early":
            conn.sendall(EARLY)
            conn.shutdown(socket.SHUT_WR)
            received = read_all(conn)
            line = f"{len(received)} {hashlib.sha256(received).hexdigest()}\n"
            log.write(line)
            log.flush()
        elif mode == "reply":
            conn.sendall(reply_for(read_all(conn)))


def listener(args: argparse.Namespace) -> socket.socket:
    if args.unix:
        with_unix = socket.socket(socket.AF_UNIX)
        if os.path.exists(args.unix):
            os.unlink(args.unix)
        with_unix.bind(args.unix)
        return with_unix
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.tcp))
    return sock


def serve(args: argparse.Namespace) -> None:
    sock = listener(args)
    sock.listen(128)
    log = open(args.log, "a") if args.log else sys.stdout  # noqa: SIM115
    print("listening", flush=True)
    while True:
        conn, _ = sock.accept()
        threading.Thread(target=serve_one, args=(conn, args.mode, log), daemon=True).start()


def connect(args: argparse.Namespace) -> socket.socket:
    if args.unix:
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(args.unix)
        return sock
    return socket.create_connection(("127.0.0.1", args.tcp))


def run_once(args: argparse.Namespace) -> tuple[bool, str]:
    with connect(args) as conn:
        conn.settimeout(10)
        if args.mode == "banner":
            conn.shutdown(socket.SHUT_WR)
            got = read_all(conn)
            return got == BANNER, repr(got[:40])
        if args.mode == "early":
            sender = threading.Thread(target=conn.sendall, args=(UPLOAD,))
            sender.start()
            got = read_all(conn)
            sender.join()
            conn.shutdown(socket.SHUT_WR)
            return got == EARLY, repr(got[:40])
        request = os.urandom(1000)
        conn.sendall(request)
        conn.shutdown(socket.SHUT_WR)
        got = read_all(conn)
        return got == reply_for(request), f"{len(got)} bytes"


def client(args: argparse.Namespace) -> None:
    for _ in range(args.runs):
        started = time.monotonic()
        try:
            ok, detail = run_once(args)
        except OSError as error:
            ok, detail = False, f"{type(error).__name__}: {error}"
        seconds = time.monotonic() - started
        print(json.dumps({"ok": ok, "seconds": seconds, "detail": detail}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=("serve", "client"))
    parser.add_argument("--tcp", type=int)
    parser.add_argument("--unix")
    parser.add_argument("--mode", choices=("banner", "early", "reply"), required=True)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--log")
    args = parser.parse_args()
    serve(args) if args.role == "serve" else client(args)


if __name__ == "__main__":
    main()
