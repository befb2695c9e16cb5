"""Resolving a new connection to its sandbox, user and environment, before any channel."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from .._metrics import Metrics
from ..hooks import (
    ROOT_USER,
    EnvVarFetcher,
    Sandbox,
    SandboxEnsurer,
    SandboxProvider,
    SandboxStatus,
    UserInfo,
    UserInfoFetcher,
)
from .ensure import EnsureCoordinator, progress_of

log = logging.getLogger("sandbox_ssh.session")
_MAX_REASON = 300
_MAX_SHOWN_ID = 64

# What a session ID may look like; anything else is refused before any runtime call.
DEFAULT_SESSION_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"


class ConnectionRejected(Exception):
    """The connection is refused; ``str(self)`` is the one-line reason for the client."""


@dataclass(frozen=True)
class ResolvedConnection:
    session_id: str
    sandbox: Sandbox
    user: UserInfo
    env: dict[str, str] = field(repr=False)  # may hold credentials: never logged


@dataclass
class Hooks:
    """The runtime side of one gateway; ``ensurer`` may be replaced at any time."""

    provider: SandboxProvider
    ensurer: SandboxEnsurer | None = None
    user_info_fetcher: UserInfoFetcher | None = None
    env_var_fetcher: EnvVarFetcher | None = None
    ensures: EnsureCoordinator = field(default_factory=lambda: EnsureCoordinator(60.0))
    # The original's behaviour: run as root when the user fetch fails (logged each time).
    user_fallback_root: bool = False
    session_id_pattern: re.Pattern[str] = field(
        default_factory=lambda: re.compile(DEFAULT_SESSION_ID_PATTERN)
    )
    metrics: Metrics = field(default_factory=Metrics)


def one_line(error: BaseException) -> str:
    """An exception as a single printable line, bounded in length."""
    text = " ".join(str(error).split()) or type(error).__name__
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 3] + "..."


def shown_id(session_id: str) -> str:
    """A session ID safe to print: escaped and bounded."""
    escaped = session_id.encode("unicode_escape", "backslashreplace").decode("ascii")
    escaped = escaped.replace('"', '\\"')
    return escaped if len(escaped) <= _MAX_SHOWN_ID else escaped[: _MAX_SHOWN_ID - 3] + "..."


def check_session_id(session_id: str, pattern: re.Pattern[str]) -> None:
    if not pattern.fullmatch(session_id):
        raise ConnectionRejected(
            f'session "{shown_id(session_id)}": not a valid session ID '
            f"(letters, digits, '.', '_' and '-', at most 128)"
        )


def _reject(session_id: str, reason: str) -> ConnectionRejected:
    return ConnectionRejected(f'session "{session_id}": {reason}')


Notify = Callable[[str], None]


async def resolve_connection(
    hooks: Hooks, session_id: str, notify: Notify | None = None
) -> ResolvedConnection:
    """What the original does for every connection, before any channel is served.

    ``notify`` tells a waiting person what is happening (an SSH auth banner).
    """
    check_session_id(session_id, hooks.session_id_pattern)
    provider, ensurer, metrics = hooks.provider, hooks.ensurer, hooks.metrics

    async def find() -> Sandbox | None:
        return await metrics.timed(
            metrics.provider_latency, "find", lambda: provider.find_sandbox(session_id)
        )

    try:
        sandbox = await find()
        if ensurer is not None:
            running = sandbox is not None and sandbox.status is SandboxStatus.RUNNING

            def tell_slow() -> None:
                if notify is not None:
                    notify(f"starting sandbox {session_id}...{progress_of(ensurer, session_id)}")

            assert ensurer is not None
            await metrics.timed(
                metrics.hook_latency,
                "ensure",
                lambda: hooks.ensures.ensure(ensurer, session_id, None if running else tell_slow),
            )
            if not running:
                sandbox = await find()
    except asyncio.CancelledError:
        raise
    except Exception as error:
        raise _reject(session_id, one_line(error)) from error
    if sandbox is None:
        raise _reject(session_id, "no sandbox with this session ID")
    if sandbox.status is not SandboxStatus.RUNNING:
        raise _reject(session_id, f"the sandbox is {sandbox.status.value}, and nothing starts it")

    user = ROOT_USER
    env: dict[str, str] = {}
    try:
        if hooks.user_info_fetcher is not None:
            fetcher = hooks.user_info_fetcher
            try:
                user = await metrics.timed(
                    metrics.hook_latency, "user", lambda: fetcher.get_user_info(session_id)
                )
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if not hooks.user_fallback_root:
                    raise
                log.warning(
                    "session %s: user lookup failed (%s); running as root (--user-fallback root)",
                    session_id,
                    one_line(error),
                )
        if hooks.env_var_fetcher is not None:
            env_fetcher = hooks.env_var_fetcher
            env = dict(
                await metrics.timed(
                    metrics.hook_latency,
                    "env",
                    lambda: env_fetcher.get_env_vars_for_session(session_id),
                )
            )
    except asyncio.CancelledError:
        raise
    except Exception as error:
        # Fail closed: running as the wrong user or without credentials is worse than refusing.
        raise _reject(session_id, f"cannot prepare the session: {one_line(error)}") from error
    return ResolvedConnection(session_id=session_id, sandbox=sandbox, user=user, env=env)
