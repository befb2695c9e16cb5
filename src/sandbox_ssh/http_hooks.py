"""The four hooks served by a platform's HTTP endpoints, for platforms not written in Python.

Every call is ``POST <url>`` with a JSON body and ``Authorization: Bearer <token>``
when a token is configured. A 2xx answer carries JSON; a 4xx answer is final and
its ``{"error": "..."}`` is shown to the client; a 5xx answer, a timeout or a
network error is retried with exponential backoff. What cannot be answered
fails closed: the connection is refused with a reason. See docs/http-hooks.md.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp

from ._release import once
from .hooks import Quotas, Release, TokenRefused, TokenVerdict, UserInfo

log = logging.getLogger("sandbox_ssh.http_hooks")


class HookError(Exception):
    """A hook endpoint refused or could not answer; the message is one line for the client."""


@dataclass(frozen=True)
class HttpHookSettings:
    token: str | None = None
    timeout: float = 5.0  # per attempt
    attempts: int = 3
    backoff: float = 0.2  # first retry delay; doubles each time


class HttpHookClient:
    """One aiohttp session shared by every hook of a gateway."""

    def __init__(self, settings: HttpHookSettings) -> None:
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"User-Agent": "sandbox-ssh"}
            if self.settings.token:
                headers["Authorization"] = f"Bearer {self.settings.token}"
            self._session = aiohttp.ClientSession(headers=headers)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def call(self, hook: str, url: str, payload: dict[str, Any]) -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout)
        last_problem = "no attempt"
        for attempt in range(max(1, self.settings.attempts)):
            if attempt:
                await asyncio.sleep(self.settings.backoff * 2 ** (attempt - 1))
            try:
                async with self._client().post(url, json=payload, timeout=timeout) as response:
                    body = await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as error:
                last_problem = "it timed out" if isinstance(error, TimeoutError) else str(error)
                log.warning("%s hook attempt %d failed: %s", hook, attempt + 1, last_problem)
                continue
            if status >= 500:
                last_problem = f"HTTP {status}"
                log.warning("%s hook attempt %d: HTTP %d", hook, attempt + 1, status)
                continue
            document = _parse(hook, body)
            if status >= 400:
                reason = document.get("error") if isinstance(document, dict) else None
                raise HookError(
                    str(reason) if reason else f"the {hook} hook refused (HTTP {status})"
                )
            if not isinstance(document, dict):
                raise HookError(f"the {hook} hook returned malformed JSON")
            return document
        raise HookError(f"the {hook} hook did not answer: {last_problem}")


def _parse(hook: str, body: bytes) -> Any:
    try:
        return json.loads(body) if body.strip() else {}
    except (ValueError, UnicodeDecodeError):
        raise HookError(f"the {hook} hook returned malformed JSON") from None


class HttpSandboxEnsurer:
    """``POST {"session_id"}``; any 2xx means the sandbox runs."""

    def __init__(self, client: HttpHookClient, url: str) -> None:
        self._client, self._url = client, url

    async def ensure_sandbox(self, session_id: str) -> None:
        await self._client.call("ensure", self._url, {"session_id": session_id})


class HttpUserInfoFetcher:
    """``POST {"session_id"}`` → ``{"username": str, "uid": int, "gid": int}``, and
    optionally ``"tenant": str`` and ``"quotas": {"connections": int, ...}``."""

    def __init__(self, client: HttpHookClient, url: str) -> None:
        self._client, self._url = client, url

    async def get_user_info(self, session_id: str) -> UserInfo:
        answer = await self._client.call("user-info", self._url, {"session_id": session_id})
        username, uid, gid = answer.get("username"), answer.get("uid"), answer.get("gid")
        if not isinstance(username, str) or not _is_id(uid) or not _is_id(gid):
            raise HookError("the user-info hook answered without a username, uid and gid")
        assert isinstance(uid, int) and isinstance(gid, int)
        tenant = answer.get("tenant")
        if tenant is not None and not (isinstance(tenant, str) and 0 < len(tenant) <= 256):
            raise HookError("the user-info hook answered with a tenant that is not a name")
        return UserInfo(
            username=username, uid=uid, gid=gid, tenant=tenant, quotas=_quotas(answer.get("quotas"))
        )


_QUOTA_NAMES = tuple(field.name for field in dataclasses.fields(Quotas))


def _quotas(value: object) -> Quotas | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
        name in _QUOTA_NAMES and _is_count(amount) for name, amount in value.items()
    ):
        raise HookError(
            f"the user-info hook answered with malformed quotas (known: {', '.join(_QUOTA_NAMES)}; "
            "each a whole number >= 0)"
        )
    return Quotas(**value)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**32


class HttpEnvVarFetcher:
    """``POST {"session_id"}`` → ``{"env": {"NAME": "value", ...}}``."""

    def __init__(self, client: HttpHookClient, url: str) -> None:
        self._client, self._url = client, url

    async def get_env_vars_for_session(self, session_id: str) -> dict[str, str]:
        answer = await self._client.call("env", self._url, {"session_id": session_id})
        env = answer.get("env", {})
        if not isinstance(env, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in env.items()
        ):
            raise HookError("the env hook answered without an object of strings")
        return dict(env)


class HttpAuthorizedKeysFetcher:
    """``POST {"session_id"}`` → ``{"authorized_keys": "<authorized_keys lines>"}``."""

    def __init__(self, client: HttpHookClient, url: str) -> None:
        self._client, self._url = client, url

    async def __call__(self, session_id: str) -> str:
        answer = await self._client.call("authorized-keys", self._url, {"session_id": session_id})
        keys = answer.get("authorized_keys", "")
        if not isinstance(keys, str):
            raise HookError("the authorized-keys hook answered without a string of keys")
        return keys


class HttpTokenVerifier:
    """``POST {"session_id", "token"}`` → ``{"single_use": bool, "expires_at": unix time}``.

    Any 2xx accepts the token (both fields optional); a 4xx refuses it, with its
    ``error`` shown to the client. The token is in the request body only.
    """

    def __init__(self, client: HttpHookClient, url: str) -> None:
        self._client, self._url = client, url

    async def verify_token(self, session_id: str, token: str) -> TokenVerdict:
        payload = {"session_id": session_id, "token": token}
        try:
            answer = await self._client.call("token", self._url, payload)
        except HookError as error:
            raise TokenRefused(f'session "{session_id}": {error}') from None
        single_use, expires_at = answer.get("single_use", False), answer.get("expires_at")
        if not isinstance(single_use, bool) or not (
            expires_at is None
            or (isinstance(expires_at, (int, float)) and not isinstance(expires_at, bool))
        ):
            raise TokenRefused(
                f'session "{session_id}": the token hook answered with a malformed single_use '
                "or expires_at"
            )
        return TokenVerdict(
            expires_at=None if expires_at is None else float(expires_at), single_use=single_use
        )


class HttpConnectionTracker:
    """``POST {"session_id", "connection_id", "event": "connect" | "disconnect"}``.

    Tracking never delays or refuses a connection: calls run in the background,
    and failures are logged. As a :class:`ConnectionAdmitter` (``--track-refuses``),
    the connect call is awaited instead, and a refusal refuses the connection: a
    platform running several replicas keeps its quotas in its own count this way.
    """

    def __init__(self, client: HttpHookClient, url: str) -> None:
        self._client, self._url = client, url
        self._pending: set[asyncio.Task[None]] = set()

    async def admit(self, session_id: str) -> Release:
        connection_id = uuid.uuid4().hex
        payload = {"session_id": session_id, "connection_id": connection_id, "event": "connect"}
        await self._client.call("track", self._url, payload)
        return once(lambda: self._send(session_id, connection_id, "disconnect"))

    def track(self, session_id: str) -> Release:
        connection_id = uuid.uuid4().hex
        self._send(session_id, connection_id, "connect")
        return once(lambda: self._send(session_id, connection_id, "disconnect"))

    def _send(self, session_id: str, connection_id: str, event: str) -> None:
        payload = {"session_id": session_id, "connection_id": connection_id, "event": event}

        async def post() -> None:
            try:
                await self._client.call("track", self._url, payload)
            except HookError as error:
                log.warning("track hook (%s %s) failed: %s", event, session_id, error)

        task = asyncio.ensure_future(post())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        """Wait for the tracking calls still in flight (at shutdown)."""
        if self._pending:
            await asyncio.wait(list(self._pending), timeout=10)
