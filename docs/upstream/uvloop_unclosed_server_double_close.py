"""Minimal reproduction: uvloop closes a collected server's descriptor, and so does its socket.

A server made with ``loop.create_unix_server(sock=sock)`` (or ``create_server``) and never
closed is, once unreachable, deallocated with its libuv handle still open. uvloop's
``UVHandle.__dealloc__`` then ``uv_close``s the handle, which closes the descriptor, but does
not detach the socket object it attached (``_attach_fileobj``), as its ``_close`` does. The
socket object still owns the number, and its own finalizer closes it again: if the number was
reused meanwhile (by this thread or any other), that close takes someone else's descriptor.

    python3 uvloop_unclosed_server_double_close.py    # needs uvloop; Linux or macOS
"""

import asyncio
import gc
import os
import socket
import tempfile

import uvloop


async def main() -> None:
    path = os.path.join(tempfile.mkdtemp(), "listener.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen()
    number = sock.fileno()
    server = await asyncio.get_running_loop().create_unix_server(asyncio.Protocol, sock=sock)
    del server  # never closed: a bug of the caller, but one that should cost only a warning
    gc.collect()  # the server's handle is deallocated, and its descriptor closed
    victim = os.open(os.devnull, os.O_RDONLY)  # reuses the lowest free number
    print(f"the socket had descriptor {number}; an unrelated file now has {victim}")
    del sock  # the socket object closes "its" descriptor: the unrelated file's
    gc.collect()
    try:
        os.fstat(victim)
    except OSError as error:
        print(f"uvloop {uvloop.__version__}: the unrelated file's descriptor is gone: {error}")
    else:
        print(f"uvloop {uvloop.__version__}: not reproduced")
        os.close(victim)


uvloop.run(main())
