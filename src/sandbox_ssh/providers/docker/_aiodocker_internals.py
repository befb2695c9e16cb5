"""Every aiodocker internal the Docker provider relies on, in one place.

aiodocker (0.27) has no public way to open an exec stream before the first
read, to half-close its stdin, or to call an engine endpoint it does not
wrap (Podman's libpod API). Each use is pinned by
``tests/unit/test_aiodocker_internals.py``, which fails when aiodocker changes
under it.
"""

from __future__ import annotations

from typing import Any

import aiodocker
from aiodocker.stream import Stream


async def open_stream(stream: Stream) -> None:
    """Send the exec start request now: a refusal surfaces here, not at the first read."""
    await stream._init()


def half_close(stream: Stream) -> bool:
    """Shut the write side of the hijacked connection (stdin EOF); False if it is gone.

    ``Stream.close()`` ends the whole response, so the transport is used directly.
    """
    response = stream._resp
    connection = response.connection if response is not None else None
    transport = connection.transport if connection is not None else None
    if transport is None or not transport.can_write_eof():
        return False
    transport.write_eof()
    return True


async def get_json(docker: aiodocker.Docker, path: str) -> Any:
    """GET an engine endpoint aiodocker does not wrap, under the negotiated API version."""
    return await docker._query_json(path)
