"""The broker's request table, and how requests and replies travel.

Between a front and the broker: an AF_UNIX SOCK_SEQPACKET socket, one JSON object per
datagram (at most ``MAX_DATAGRAM`` bytes), descriptors with the datagram they belong
to. A body too large for one datagram (a start's environment may be 256 KiB) travels
in a sealed memfd sent with a datagram ``{"body": "memfd"}``, at most ``MAX_BODY``.

A request is ``{"id": N, "op": NAME, ...arguments}``; its reply ``{"id": N, "result":
{...}}`` or ``{"id": N, "error": "one line", "kind": KIND}``. Replies may come in any
order. ``REQUESTS`` is the whole table: a name not in it, an argument missing, of the
wrong type or out of its bounds, is refused with ``kind: "bad_request"`` and the
broker goes on serving. Nothing in a request is a host path, a PID or a container ID:
sandboxes are named by session ID, then by the handles the broker issued.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import json
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from typing import Any

MAX_DATAGRAM = 60 * 1024
MAX_BODY = 4 << 20
MAX_FDS = 4
_ANCILLARY_SPACE = socket.CMSG_SPACE(MAX_FDS * array.array("i").itemsize)
_F_ADD_SEALS = 1033
_F_GET_SEALS = 1034
_SEALS = 0x0001 | 0x0002 | 0x0004 | 0x0008  # SEAL, SHRINK, GROW, WRITE

Message = dict[str, Any]


class BadRequest(ValueError):
    """A request the table refuses; ``str()`` says which argument and why."""


# Argument checks: each returns the value, or raises BadRequest.
Check = Callable[[str, Any], Any]


def text(limit: int, empty: bool = False) -> Check:
    def check(name: str, value: Any) -> Any:
        if not isinstance(value, str) or not (value or empty) or len(value.encode()) > limit:
            raise BadRequest(f"{name}: a string of {0 if empty else 1} to {limit} bytes")
        if "\x00" in value:
            raise BadRequest(f"{name}: no NUL character")
        return value

    return check


def number(low: int, high: int) -> Check:
    def check(name: str, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise BadRequest(f"{name}: an integer from {low} to {high}")
        return value

    return check


HANDLE = number(1, 2**53)
# Any string (an empty or odd one simply finds nothing), bounded.
SESSION_ID = text(1024, empty=True)
_UID = number(0, 2**32 - 2)


def user(name: str, value: Any) -> Any:
    if not isinstance(value, dict) or set(value) != {"username", "uid", "gid"}:
        raise BadRequest(f"{name}: an object with username, uid and gid")
    text(256)(f"{name}.username", value["username"])
    _UID(f"{name}.uid", value["uid"])
    _UID(f"{name}.gid", value["gid"])
    return value


_MAX_ARGV = 4096
_MAX_ENV = 4096


def spec(name: str, value: Any) -> Any:
    """A ProcessSpec: argv, env, user, workdir and terminal."""
    if not isinstance(value, dict) or set(value) != {"argv", "env", "user", "workdir", "terminal"}:
        raise BadRequest(f"{name}: an object with argv, env, user, workdir and terminal")
    argv, env = value["argv"], value["env"]
    if not isinstance(argv, list) or not argv or len(argv) > _MAX_ARGV:
        raise BadRequest(f"{name}.argv: a list of 1 to {_MAX_ARGV} strings")
    for item in argv:
        if not isinstance(item, str) or "\x00" in item:
            raise BadRequest(f"{name}.argv: strings without NUL")
    if not isinstance(env, dict) or len(env) > _MAX_ENV:
        raise BadRequest(f"{name}.env: an object of at most {_MAX_ENV} strings")
    for key, item in env.items():
        if not key or "=" in key or "\x00" in key or not isinstance(item, str) or "\x00" in item:
            raise BadRequest(f"{name}.env: NAME=VALUE strings without NUL")
    user(f"{name}.user", value["user"])
    if value["workdir"] is not None:
        text(4096)(f"{name}.workdir", value["workdir"])
    terminal = value["terminal"]
    if terminal is not None:
        if not isinstance(terminal, dict) or set(terminal) != {"cols", "rows"}:
            raise BadRequest(f"{name}.terminal: an object with cols and rows")
        number(1, 10_000)(f"{name}.terminal.cols", terminal["cols"])
        number(1, 10_000)(f"{name}.terminal.rows", terminal["rows"])
    return value


# The table: each request's arguments, and what the broker does (in _broker/server.py).
REQUESTS: Mapping[str, Mapping[str, Check]] = {
    # The broker's choices, once: exec path and whether forwarding works.
    "hello": {},
    "health": {},
    # Sandboxes, by session ID: found ones get a handle for the requests below.
    "find": {"session_id": SESSION_ID},
    "ensure": {"session_id": SESSION_ID},
    "stop": {"session_id": SESSION_ID},
    "user": {"session_id": SESSION_ID},
    # Processes: started in a sandbox the front holds a handle to; answered with their
    # stdio's descriptors (runtime path) or, after "login", their stream's.
    "start": {"sandbox": HANDLE, "spec": spec},
    "login": {"process": HANDLE},
    "wait": {"process": HANDLE},
    "signal": {"process": HANDLE, "signal": text(16)},
    "resize": {"process": HANDLE, "cols": number(1, 10_000), "rows": number(1, 10_000)},
    "hangup": {"process": HANDLE},
    "release": {"process": HANDLE},
    # Sockets inside a sandbox, answered with their descriptor.
    # TCP: unconnected sockets in the sandbox's namespace, one per address the name has
    # there; the front connects them, so that no slow peer holds a request here.
    "tcp_sockets": {"sandbox": HANDLE, "host": text(255)},
    "connect_unix": {"sandbox": HANDLE, "path": text(4096), "user": user},
    "listen_tcp": {"sandbox": HANDLE, "host": text(255), "port": number(0, 65535)},
    "listen_unix": {"sandbox": HANDLE, "path": text(4096), "user": user},
    "listen_agent": {"sandbox": HANDLE, "user": user},
    "unlisten": {"listener": HANDLE},
}


def checked(message: Any) -> tuple[int, str, dict[str, Any]]:
    """(id, op, arguments) of a well-formed request; BadRequest otherwise."""
    if not isinstance(message, dict):
        raise BadRequest("a request is a JSON object")
    request_id = message.get("id")
    if isinstance(request_id, bool) or not isinstance(request_id, int) or request_id < 1:
        raise BadRequest("id: a positive integer")
    op = message.get("op")
    arguments = REQUESTS.get(op) if isinstance(op, str) else None
    if arguments is None or not isinstance(op, str):
        raise BadRequest(f"no request named {str(op)[:32]!r}")
    extra = set(message) - {"id", "op", *arguments}
    if extra:
        raise BadRequest(f"{op}: unknown argument {sorted(extra)[0][:32]!r}")
    values = {}
    for name, check in arguments.items():
        if name not in message:
            raise BadRequest(f"{op}: {name} is missing")
        values[name] = check(name, message[name])
    return request_id, op, values


# Sending and receiving.


def _sealed_body(data: bytes) -> int:
    fd = os.memfd_create("sandbox-ssh-body", os.MFD_CLOEXEC | 0x0002)  # MFD_ALLOW_SEALING
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        fcntl.fcntl(fd, _F_ADD_SEALS, _SEALS)
    except BaseException:
        os.close(fd)
        raise
    return fd


def encode(message: Message, fds: Sequence[int] = ()) -> tuple[bytes, list[int], int | None]:
    """The datagram, the descriptors to send, and a body descriptor to close after."""
    data = json.dumps(message, separators=(",", ":")).encode()
    if len(data) <= MAX_DATAGRAM:
        return data, list(fds), None
    if len(data) > MAX_BODY or len(fds) >= MAX_FDS:
        raise ValueError(f"message of {len(data)} bytes is over the broker's bound")
    body = _sealed_body(data)
    return b'{"body":"memfd"}', [body, *fds], body


def send(sock: socket.socket, message: Message, fds: Sequence[int] = ()) -> None:
    """Send one message; raises BlockingIOError when the socket is full."""
    data, all_fds, body = encode(message, fds)
    ancillary = (
        [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", all_fds))] if all_fds else []
    )
    try:
        sock.sendmsg([data], ancillary)
    finally:
        if body is not None:
            os.close(body)


def _close(fds: Sequence[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _read_body(fd: int) -> bytes:
    if fcntl.fcntl(fd, _F_GET_SEALS) & _SEALS != _SEALS:
        raise BadRequest("a body must come in a sealed memfd")
    size = os.fstat(fd).st_size
    if size > MAX_BODY:
        raise BadRequest(f"a body is at most {MAX_BODY} bytes")
    return os.pread(fd, size, 0)


def receive(sock: socket.socket) -> tuple[Any, list[int]] | None:
    """One message (parsed JSON, any type) and its descriptors; None at EOF.

    Raises BlockingIOError when nothing waits, BadRequest for what cannot be read
    (its descriptors are closed).
    """
    data, ancillary, flags, _ = sock.recvmsg(
        MAX_DATAGRAM + 1, _ANCILLARY_SPACE, socket.MSG_CMSG_CLOEXEC
    )
    fds = array.array("i")
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    received = list(fds)
    if not data:
        _close(received)
        return None
    try:
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) or len(data) > MAX_DATAGRAM:
            raise BadRequest(f"a datagram is at most {MAX_DATAGRAM} bytes and {MAX_FDS} fds")
        message = json.loads(data)
        if message == {"body": "memfd"}:
            if not received:
                raise BadRequest("a memfd body came without its descriptor")
            body, *received = received
            try:
                message = json.loads(_read_body(body))
            finally:
                os.close(body)
    except (ValueError, OSError) as error:
        _close(received)
        raise (
            error if isinstance(error, BadRequest) else BadRequest(f"unreadable: {error}")
        ) from None
    return message, received
