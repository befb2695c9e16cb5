"""Connection resolution against fake hooks: pure decision logic."""

from __future__ import annotations

import asyncio

import pytest

from sandbox_ssh import ProcessSpec, Sandbox, SandboxError, SandboxProcess, SandboxStatus, UserInfo
from sandbox_ssh._session.resolve import (
    ConnectionRejected,
    Hooks,
    ResolvedConnection,
    one_line,
    resolve_connection,
)


class FakeProvider:
    def __init__(self, *answers: Sandbox | Exception | None) -> None:
        self.answers = list(answers)
        self.lookups = 0

    async def find_sandbox(self, session_id: str) -> Sandbox | None:
        self.lookups += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def start_process(self, sandbox: Sandbox, spec: ProcessSpec) -> SandboxProcess:
        raise NotImplementedError

    async def close(self) -> None:
        pass


class Ensurer:
    def __init__(self, error: Exception | None = None) -> None:
        self.calls: list[str] = []
        self.error = error

    async def ensure_sandbox(self, session_id: str) -> None:
        self.calls.append(session_id)
        if self.error:
            raise self.error


def sandbox(status: SandboxStatus = SandboxStatus.RUNNING) -> Sandbox:
    return Sandbox(session_id="s1", id="c1", status=status)


def resolve(hooks: Hooks) -> ResolvedConnection:
    return asyncio.run(resolve_connection(hooks, "s1"))


def rejection(hooks: Hooks) -> str:
    with pytest.raises(ConnectionRejected) as caught:
        resolve(hooks)
    return str(caught.value)


def test_running_sandbox_resolves_as_root_without_fetchers() -> None:
    resolved = resolve(Hooks(provider=FakeProvider(sandbox())))
    assert resolved.sandbox.id == "c1"
    assert resolved.user == UserInfo("root", 0, 0)
    assert resolved.env == {}


def test_unknown_session_is_rejected_by_name() -> None:
    assert (
        rejection(Hooks(provider=FakeProvider(None)))
        == 'session "s1": no sandbox with this session ID'
    )


def test_stopped_sandbox_without_ensurer_is_rejected() -> None:
    reason = rejection(Hooks(provider=FakeProvider(sandbox(SandboxStatus.STOPPED))))
    assert reason == 'session "s1": the sandbox is stopped, and nothing starts it'


def test_ensurer_runs_and_the_sandbox_is_looked_up_again() -> None:
    provider = FakeProvider(sandbox(SandboxStatus.STOPPED), sandbox())
    ensurer = Ensurer()
    resolve(Hooks(provider=provider, ensurer=ensurer))
    assert ensurer.calls == ["s1"] and provider.lookups == 2


def test_ensurer_is_called_for_a_running_sandbox_without_a_second_lookup() -> None:
    provider = FakeProvider(sandbox())
    ensurer = Ensurer()
    resolve(Hooks(provider=provider, ensurer=ensurer))
    assert ensurer.calls == ["s1"] and provider.lookups == 1


def test_ensurer_error_becomes_a_one_line_reason() -> None:
    reason = rejection(
        Hooks(provider=FakeProvider(sandbox()), ensurer=Ensurer(RuntimeError("no\nquota")))
    )
    assert reason == 'session "s1": no quota'


def test_provider_error_is_a_rejection() -> None:
    reason = rejection(Hooks(provider=FakeProvider(SandboxError("2 containers carry label"))))
    assert reason == 'session "s1": 2 containers carry label'


class BrokenFetcher:
    async def get_user_info(self, session_id: str) -> UserInfo:
        raise OSError("directory service down")

    async def get_env_vars_for_session(self, session_id: str) -> dict[str, str]:
        raise OSError("vault sealed")


def test_failing_user_fetcher_fails_closed() -> None:
    hooks = Hooks(provider=FakeProvider(sandbox()), user_info_fetcher=BrokenFetcher())
    assert rejection(hooks) == 'session "s1": cannot prepare the session: directory service down'


def test_failing_env_fetcher_fails_closed() -> None:
    hooks = Hooks(provider=FakeProvider(sandbox()), env_var_fetcher=BrokenFetcher())
    assert "vault sealed" in rejection(hooks)


def test_one_line_bounds_and_cleans_text() -> None:
    assert one_line(RuntimeError("a\n\tb\x1b[31m")) == "a b?[31m"
    assert len(one_line(RuntimeError("x" * 1000))) == 300
    assert one_line(RuntimeError()) == "RuntimeError"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "x" * 4096,
        "abc\x1b[2J",
        "a\nb",
        "../etc",
        "*",
        "-oProxyCommand=x",
        "\uff41\uff42\uff43",
        "\u0430bc",
        "a b",
        "a/b",
        "a\x00b",
        ".hidden",
        "x" * 129,
    ],
)
def test_invalid_session_ids_are_refused_before_any_runtime_call(bad: str) -> None:
    provider = FakeProvider(sandbox())
    with pytest.raises(ConnectionRejected, match="not a valid session ID") as caught:
        asyncio.run(resolve_connection(Hooks(provider=provider), bad))
    assert provider.lookups == 0
    reason = str(caught.value)
    assert reason.isprintable() and len(reason) < 200


@pytest.mark.parametrize("good", ["a", "A1", "sess-01.b_c", "x" * 128, "0"])
def test_valid_session_ids(good: str) -> None:
    provider = FakeProvider(sandbox())
    asyncio.run(resolve_connection(Hooks(provider=provider), good))
    assert provider.lookups == 1
