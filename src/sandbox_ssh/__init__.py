"""sandbox-ssh: an SSH gateway whose username is the session ID of a sandbox container."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._logs import holding_warnings

if TYPE_CHECKING:
    from ._session.forwarding import ForwardingKind
    from .config import Config
    from .hooks import (
        AgentSocketHost,
        AuthorizedKeysSource,
        BoundListener,
        ConnectionAdmitter,
        ConnectionTracker,
        DirectStdio,
        EnvVarFetcher,
        ExitSignal,
        ExitSignalReporter,
        HealthReporter,
        OutputSink,
        OutputStream,
        PreparedProvider,
        ProcessSpec,
        Quotas,
        Release,
        Sandbox,
        SandboxEnsurer,
        SandboxError,
        SandboxNetwork,
        SandboxProcess,
        SandboxProvider,
        SandboxStatus,
        SandboxStopper,
        StartProgress,
        TerminalSize,
        TokenRefused,
        TokenVerdict,
        TokenVerifier,
        UserInfo,
        UserInfoFetcher,
    )
    from .server import Server
    from .tracking import CombinedTracker, IdleStopper, InMemoryConnectionTracker

# Where each public name lives. Loaded on first use (PEP 562), so that a program that
# needs only part of the package (the privileged broker, which must not even load the SSH
# side) does not import the rest.
_HOME = {
    "ForwardingKind": "._session.forwarding",
    "Config": ".config",
    "Server": ".server",
    "CombinedTracker": ".tracking",
    "IdleStopper": ".tracking",
    "InMemoryConnectionTracker": ".tracking",
}


def __getattr__(name: str) -> Any:
    module = _HOME.get(name, ".hooks" if name in __all__ else None)
    if module is None or name == "__version__":
        raise AttributeError(f"module 'sandbox_ssh' has no attribute {name!r}")
    # Warnings from our dependencies' imports wait for logging (see _logs.holding_warnings).
    with holding_warnings():
        value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


__version__ = "0.1.0"

__all__ = [
    "AgentSocketHost",
    "AuthorizedKeysSource",
    "BoundListener",
    "CombinedTracker",
    "Config",
    "ConnectionAdmitter",
    "ConnectionTracker",
    "DirectStdio",
    "EnvVarFetcher",
    "ExitSignal",
    "ExitSignalReporter",
    "ForwardingKind",
    "HealthReporter",
    "IdleStopper",
    "InMemoryConnectionTracker",
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
    "Server",
    "StartProgress",
    "TerminalSize",
    "TokenRefused",
    "TokenVerdict",
    "TokenVerifier",
    "UserInfo",
    "UserInfoFetcher",
    "__version__",
]
