"""sandbox-ssh: an SSH gateway whose username is the session ID of a sandbox container."""

from ._logs import holding_warnings

# Warnings from our dependencies' imports wait for logging (see _logs.holding_warnings).
with holding_warnings():
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
