"""A platform's HTTP hook endpoints, a real aiohttp server for the HTTP hook tests."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .gateway import LoopThread

TOKEN = "hook-token-7f3a"


@dataclass
class HookServer:
    """A platform's hook endpoints; ``behaviour`` decides each answer per session ID."""

    loop: LoopThread
    calls: list[tuple[str, dict[str, Any], str]] = field(default_factory=list)
    behaviour: dict[str, str] = field(default_factory=dict)
    port: int = 0
    runner: web.AppRunner | None = None
    keys: dict[str, str] = field(default_factory=dict)
    # Access tokens the platform minted: token -> (session ID, single use).
    tokens: dict[str, tuple[str, bool]] = field(default_factory=dict)
    used_tokens: set[str] = field(default_factory=set)
    # More of the user-info answer, per session ID (a tenant, quotas).
    user_extra: dict[str, dict[str, Any]] = field(default_factory=dict)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        hook = request.match_info["hook"]
        body = await request.json()
        self.calls.append((hook, body, request.headers.get("Authorization", "")))
        mode = self.behaviour.get(body.get("session_id", ""), "ok")
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"error": "bad hook token"}, status=401)
        if mode == f"{hook}:slow":
            await asyncio.sleep(3)  # past the 1 s hook timeout
        if mode == f"{hook}:500":
            return web.Response(status=500, text="boom")
        if mode == f"{hook}:403":
            return web.json_response({"error": "billing: account suspended"}, status=403)
        if mode == f"{hook}:garbage":
            return web.Response(text="{not json", content_type="application/json")
        if hook == "token":
            return self.answer_token(body.get("session_id", ""), body.get("token", ""))
        if hook == "user":
            extra = self.user_extra.get(body.get("session_id", ""), {})
            return web.json_response({"username": "dev", "uid": 1000, "gid": 1000, **extra})
        if hook == "keys":
            return web.json_response({"authorized_keys": self.keys.get(body["session_id"], "")})
        if hook == "env":
            return web.json_response({"env": {"PLATFORM_TOKEN": "from-hook", "MULTI": "a\nb"}})
        return web.json_response({"ok": True})

    def answer_token(self, session_id: str, token: str) -> web.Response:
        known = self.tokens.get(token)
        if known is None or known[0] != session_id:
            return web.json_response({"error": "the token is not valid"}, status=403)
        single_use = known[1]
        if single_use and token in self.used_tokens:
            return web.json_response({"error": "the token was already used"}, status=403)
        self.used_tokens.add(token)
        return web.json_response({"single_use": single_use})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hooks/{hook}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self.runner.addresses[0][1])

    def url(self, hook: str) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/{hook}"

    def hooks(self, name: str) -> list[dict[str, Any]]:
        return [body for hook, body, _ in list(self.calls) if hook == name]
