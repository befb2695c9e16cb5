"""What a start hands over: the process's stdio as descriptors, and what controls it.

``DockerProvider.start_process`` wraps these into a :class:`~sandbox_ssh.SandboxProcess`
in the same process. The broker (``sandbox_ssh._broker``) instead keeps the control and
sends the descriptors to the unprivileged front, so that no byte of a session passes
through the broker and the front never holds the Docker socket.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from .._runtime import RuntimeLauncher
from .._runtime._launcher import Launched
from .._runtime._process import RefusedProcess
from ._exec import Attached, ExecControl


@dataclass
class RuntimeLaunch:
    """The runtime path: pipes or a terminal's master, and the shim's control."""

    launched: Launched
    launcher: RuntimeLauncher


@dataclass
class ExecLaunch:
    """Docker's exec API: the stream on a socket of its own once its PID line came."""

    control: ExecControl
    attached: asyncio.Future[Attached]


Launch = RuntimeLaunch | ExecLaunch | RefusedProcess
