"""Processes started through a container's OCI runtime (runc, crun), as containerd's shim does.

The runtime is told to run a process in an existing container, detached, with
stdio the gateway owns (pipes, or the PTY master passed over a console socket).
The bytes then flow between the process and the gateway with nothing in
between. A small helper process, the shim, is the child subreaper that
outlives each runtime invocation, learns every exit status and signals
processes by PID without the risk of PID reuse.

Nothing here knows Docker or SSH; the Docker provider decides when to use it.
"""

from ._binary import RuntimeBinary, RuntimeUnavailable, find_runtime_binary
from ._launcher import RuntimeLauncher, StartRequest
from ._process import RuntimeProcess
from ._spec import process_spec
from ._users import OciUser, exec_user, parse_group, parse_passwd

__all__ = [
    "OciUser",
    "RuntimeBinary",
    "RuntimeLauncher",
    "RuntimeProcess",
    "RuntimeUnavailable",
    "StartRequest",
    "exec_user",
    "find_runtime_binary",
    "parse_group",
    "parse_passwd",
    "process_spec",
]
