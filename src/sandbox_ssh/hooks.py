"""The protocols a platform implements to plug into the gateway.

Nothing here knows SSH; nothing here knows a particular container runtime.
"""

from __future__ import annotations

import enum
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import astuple, dataclass, field
from typing import Protocol, runtime_checkable


class SandboxError(Exception):
    """A sandbox could not be found, started or used.

    Its message is shown to the SSH client, so it must be one readable line
    and must not contain secrets.
    """


class SandboxStatus(enum.Enum):
    RUNNING = "running"
    STOPPED = "stopped"  # created, exited or otherwise startable
    PAUSED = "paused"
    UNAVAILABLE = "unavailable"  # dead, being removed, or in an unknown state


@dataclass(frozen=True)
class Sandbox:
    """A sandbox as the provider found it for one session ID."""

    session_id: str
    id: str
    status: SandboxStatus
    name: str = ""
    # The runtime's labels (or annotations) as found, e.g. for keys the sandbox declares.
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Quotas:
    """Per-tenant quotas; None leaves one unbounded. See the README's Quotas section."""

    connections: int | None = None  # live connections
    channels: int | None = None  # open channels: sessions and forwarded connections
    starts_per_minute: int | None = None  # processes started in a clock minute
    bytes_in_per_hour: int | None = None  # from clients, in a clock hour
    bytes_out_per_hour: int | None = None  # to clients, in a clock hour

    def over(self, other: Quotas | None) -> Quotas:
        """These quotas, with each that ``other`` gives replacing ours."""
        if other is None:
            return self
        return Quotas(
            *(
                theirs if theirs is not None else ours
                for ours, theirs in zip(astuple(self), astuple(other), strict=True)
            )
        )


@dataclass(frozen=True)
class UserInfo:
    username: str
    uid: int
    gid: int
    # Whose quotas this connection counts against (default: the session ID), and that
    # tenant's own quotas over the gateway's.
    tenant: str | None = None
    quotas: Quotas | None = None


ROOT_USER = UserInfo(username="root", uid=0, gid=0)


@dataclass(frozen=True)
class TerminalSize:
    cols: int
    rows: int


class OutputStream(enum.Enum):
    STDOUT = 1
    STDERR = 2


@dataclass(frozen=True)
class ProcessSpec:
    """What to run inside a sandbox.

    ``terminal`` set means the process gets a TTY of that size; stdout and
    stderr are then one stream, as on any terminal.
    """

    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    user: UserInfo = ROOT_USER
    workdir: str | None = None
    terminal: TerminalSize | None = None


@runtime_checkable
class SandboxProcess(Protocol):
    """A process started in a sandbox, with streaming stdio."""

    async def write_stdin(self, data: bytes) -> None:
        """Send bytes to the process; returns once the runtime accepted them."""

    async def close_stdin(self) -> None:
        """Half-close stdin: the process reads EOF while its output keeps flowing."""

    async def read_output(self) -> tuple[OutputStream, bytes] | None:
        """The next chunk of output, or None once all output has ended."""

    async def wait(self) -> int:
        """The exit code (128+N when killed by signal N), final after the output ended."""

    async def resize(self, size: TerminalSize) -> None:
        """Resize the process's terminal (ignored without one)."""

    async def signal(self, signal_name: str) -> None:
        """Deliver a signal (``"INT"``, ``"TERM"``...) to the process's group."""

    async def hangup(self) -> None:
        """End the process the way a terminal hangup would.

        Everything in the process's session gets SIGHUP; what is still running
        after a short grace and has not deliberately ignored SIGHUP is killed.
        Processes that left the session (setsid, daemons) are not touched.
        """

    async def close(self) -> None:
        """Release the runtime resources held for this process."""


@dataclass(frozen=True)
class ExitSignal:
    """The signal that ended a process, by its SSH name (``"TERM"``, ``"KILL"``...)."""

    name: str
    core_dumped: bool = False


@runtime_checkable
class ExitSignalReporter(Protocol):
    """Optional capability of a SandboxProcess that can tell a signal from an exit code.

    sshd reports a process killed by a signal as ``exit-signal``, not as exit
    status 128+N; a runtime that only knows exit codes cannot, and then the
    gateway sends the exit code as sshd would for a shell that exited with it.
    """

    def exit_signal(self) -> ExitSignal | None:
        """After ``wait()``: the signal that killed the process, or None if it exited."""


OutputSink = Callable[[OutputStream, bytes], bool]


@runtime_checkable
class DirectStdio(Protocol):
    """Optional capability of a SandboxProcess whose stdio the event loop reaches directly.

    A keystroke and its echo then cross the gateway in one callback each way,
    with no task switch in between; everything else still goes through
    ``write_stdin`` and ``read_output``.
    """

    def write_stdin_nowait(self, data: bytes) -> int:
        """Write what stdin takes now without waiting; returns how much that was.

        Once stdin is closed (by the process or by ``close_stdin``), the data is
        dropped and its whole length returned, as ``write_stdin`` would do.
        """

    def deliver_output(self, sink: OutputSink | None) -> None:
        """Hand output to ``sink(stream, data)`` as it arrives while none is queued.

        When ``sink`` returns False, or for ``None``, output is queued for
        ``read_output`` again until the next call. ``read_output`` still
        returns None only once all output ended.
        """


@runtime_checkable
class HealthReporter(Protocol):
    """Optional provider capability: whether the runtime answers now (for /readyz)."""

    async def health(self) -> str | None:
        """None when the runtime answers; else why not, in one line."""


@runtime_checkable
class PreparedProvider(Protocol):
    """Optional provider capability: checks and set-up done once, when the server starts.

    Raising SandboxError stops the server from starting, with that one-line reason.
    """

    async def prepare(self) -> None: ...


@runtime_checkable
class SandboxProvider(Protocol):
    """Finds sandboxes and runs processes in them."""

    async def find_sandbox(self, session_id: str) -> Sandbox | None:
        """The sandbox whose session ID equals ``session_id`` exactly.

        Returns None when there is none; raises SandboxError when the answer is
        ambiguous (two sandboxes claim the session) or the runtime failed.
        """

    async def start_process(self, sandbox: Sandbox, spec: ProcessSpec) -> SandboxProcess:
        """Start a process; raises SandboxError when the runtime refuses."""

    async def close(self) -> None:
        """Release connections to the runtime."""


@dataclass
class BoundListener:
    """A listening socket inside a sandbox; ``cleanup`` undoes what binding created."""

    sock: socket.socket
    cleanup: Callable[[], None] = lambda: None
    path: str = ""  # for a unix socket: where the sandbox's processes find it
    # For a TCP listener: the port bound in the sandbox, when ``sock`` is only a local
    # stand-in for it (a listener relayed from a helper); 0 means ``sock``'s own port.
    port: int = 0


@runtime_checkable
class SandboxNetwork(Protocol):
    """Optional provider capability: sockets that live inside the sandbox.

    Every address and path is the sandbox's own: ``127.0.0.1`` is its loopback,
    and ``/run/x.sock`` is resolved in its filesystem with the user's rights.
    Errors are SandboxError with a one-line reason.
    """

    def forwarding_problem(self) -> str | None:
        """Why forwarding cannot work with this gateway's set-up, or None."""

    async def connect_tcp(self, sandbox: Sandbox, host: str, port: int) -> socket.socket: ...

    async def connect_unix(self, sandbox: Sandbox, path: str, user: UserInfo) -> socket.socket: ...

    async def listen_tcp(self, sandbox: Sandbox, host: str, port: int) -> BoundListener: ...

    async def listen_unix(self, sandbox: Sandbox, path: str, user: UserInfo) -> BoundListener: ...


@runtime_checkable
class AgentSocketHost(Protocol):
    """Optional provider capability: the socket a forwarded ssh-agent is reached at.

    A listening unix socket in a fresh directory inside the sandbox, both owned
    by ``user`` (directory 0700, socket 0600), so that no other user of the
    sandbox can reach the agent. ``BoundListener.path`` is its path in the
    sandbox; ``cleanup`` removes the socket and the directory.
    """

    async def listen_agent_socket(self, sandbox: Sandbox, user: UserInfo) -> BoundListener: ...


@runtime_checkable
class SandboxEnsurer(Protocol):
    async def ensure_sandbox(self, session_id: str) -> None:
        """Make the session's sandbox run; raising rejects the connection."""


@runtime_checkable
class StartProgress(Protocol):
    """Optional ensurer capability: what a starting sandbox is waiting for.

    Shown to the waiting client in the "starting sandbox" banner and in the
    timeout's message, e.g. ``ContainerCreating`` or ``Unschedulable``.
    """

    def start_progress(self, session_id: str) -> str | None: ...


@runtime_checkable
class AuthorizedKeysSource(Protocol):
    """Optional provider capability: authorized_keys lines the sandbox itself declares."""

    async def get_authorized_keys(self, sandbox: Sandbox) -> str: ...


@runtime_checkable
class SandboxStopper(Protocol):
    async def stop_sandbox(self, session_id: str) -> None:
        """Stop the session's sandbox (used by idle stop); a missing one is not an error."""


@runtime_checkable
class UserInfoFetcher(Protocol):
    async def get_user_info(self, session_id: str) -> UserInfo:
        """The user every process of this session runs as."""


@runtime_checkable
class EnvVarFetcher(Protocol):
    async def get_env_vars_for_session(self, session_id: str) -> dict[str, str]:
        """Variables applied first; the client's own ``env`` requests override them."""


Release = Callable[[], None]


class TokenRefused(Exception):
    """A token that does not let the client in; the message is one line, naming no token."""


@dataclass(frozen=True)
class TokenVerdict:
    """A token accepted for a session: until when, and whether it may be used only once."""

    expires_at: float | None = None  # Unix time; None: as long as the verifier says
    single_use: bool = False  # never cached: every use asks the verifier again


@runtime_checkable
class TokenVerifier(Protocol):
    async def verify_token(self, session_id: str, token: str) -> TokenVerdict:
        """Accept ``token`` for ``session_id``, or raise TokenRefused with a one-line reason."""


@runtime_checkable
class ConnectionAdmitter(Protocol):
    async def admit(self, session_id: str) -> Release:
        """Called once a connection has authenticated, before anything is served.

        Raise to refuse it: the exception's message is the client's one-line reason.
        The returned callable is called exactly once, when the connection ends.
        """


@runtime_checkable
class ConnectionTracker(Protocol):
    def track(self, session_id: str) -> Release:
        """Called once a connection is resolved to a sandbox.

        The returned callable is called exactly once, when that connection ends.
        """


__all__ = [
    "ROOT_USER",
    "AgentSocketHost",
    "AuthorizedKeysSource",
    "BoundListener",
    "ConnectionAdmitter",
    "ConnectionTracker",
    "DirectStdio",
    "EnvVarFetcher",
    "ExitSignal",
    "ExitSignalReporter",
    "HealthReporter",
    "OutputSink",
    "OutputStream",
    "PreparedProvider",
    "ProcessSpec",
    "Quotas",
    "Release",
    "Sandbox",
    "SandboxEnsurer",
    "SandboxError",
    "SandboxNetwork",
    "SandboxProcess",
    "SandboxProvider",
    "SandboxStatus",
    "SandboxStopper",
    "TerminalSize",
    "TokenRefused",
    "TokenVerdict",
    "TokenVerifier",
    "UserInfo",
    "UserInfoFetcher",
]
