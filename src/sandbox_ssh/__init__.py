"""sandbox-ssh: an SSH gateway whose username is the session ID of a sandbox container."""

from .config import Config
from .hooks import (
    ConnectionTracker,
    EnvVarFetcher,
    OutputStream,
    ProcessSpec,
    Release,
    Sandbox,
    SandboxEnsurer,
    SandboxError,
    SandboxProcess,
    SandboxProvider,
    SandboxStatus,
    TerminalSize,
    UserInfo,
    UserInfoFetcher,
)
from .server import Server

__version__ = "0.1.0"

__all__ = [
    "Config",
    "ConnectionTracker",
    "EnvVarFetcher",
    "OutputStream",
    "ProcessSpec",
    "Release",
    "Sandbox",
    "SandboxEnsurer",
    "SandboxError",
    "SandboxProcess",
    "SandboxProvider",
    "SandboxStatus",
    "Server",
    "TerminalSize",
    "UserInfo",
    "UserInfoFetcher",
    "__version__",
]
