"""What the session layer relies on from every SandboxProvider."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from sandbox_ssh import (
    OutputStream,
    ProcessSpec,
    SandboxError,
    SandboxProcess,
    SandboxProvider,
    SandboxStatus,
    TerminalSize,
    UserInfo,
)

from ..support.containers import new_session_id
from ..support.kubernetes import NO_STDIN_EOF
from ..support.wait import wait_until
from .conftest import Harness

T = TypeVar("T")


def run(harness: Harness, scenario: Callable[[SandboxProvider], Awaitable[T]]) -> T:
    async def main() -> T:
        provider = harness.provider()
        try:
            return await scenario(provider)
        finally:
            await provider.close()

    return asyncio.run(main())


async def collect(process: SandboxProcess) -> tuple[bytes, bytes, int]:
    out, err = bytearray(), bytearray()
    while (chunk := await process.read_output()) is not None:
        (out if chunk[0] is OutputStream.STDOUT else err).extend(chunk[1])
    return bytes(out), bytes(err), await process.wait()


async def start(provider: SandboxProvider, session_id: str, spec: ProcessSpec) -> SandboxProcess:
    sandbox = await provider.find_sandbox(session_id)
    assert sandbox is not None
    return await provider.start_process(sandbox, spec)


def test_finds_exactly_the_labelled_sandbox(harness: Harness) -> None:
    session_id = new_session_id()
    sandbox_id = harness.create(session_id)
    stopped_session = new_session_id()
    harness.create(stopped_session, running=False)
    harness.create_unlabelled(new_session_id())

    async def scenario(provider: SandboxProvider) -> None:
        found = await provider.find_sandbox(session_id)
        assert found is not None and found.id == sandbox_id
        assert found.session_id == session_id and found.status is SandboxStatus.RUNNING
        stopped = await provider.find_sandbox(stopped_session)
        assert stopped is not None and stopped.status is SandboxStatus.STOPPED
        for near_miss in (session_id[:-1], session_id + "x", sandbox_id[:12], sandbox_id, ""):
            assert await provider.find_sandbox(near_miss) is None

    run(harness, scenario)


def test_unlabelled_sandbox_is_not_found_by_name(harness: Harness) -> None:
    name = new_session_id("plain")
    harness.create_unlabelled(name)

    async def scenario(provider: SandboxProvider) -> None:
        assert await provider.find_sandbox(name) is None

    run(harness, scenario)


def test_two_sandboxes_for_one_session_raise(harness: Harness) -> None:
    session_id = new_session_id()
    harness.create(session_id)
    harness.create(session_id)

    async def scenario(provider: SandboxProvider) -> None:
        with pytest.raises(SandboxError, match="exactly one"):
            await provider.find_sandbox(session_id)

    run(harness, scenario)


def test_stdout_stderr_exit_code_and_half_close(harness: Harness) -> None:
    if not harness.stdin_eof:
        pytest.skip(NO_STDIN_EOF)
    session_id = new_session_id()
    harness.create(session_id)

    async def scenario(provider: SandboxProvider) -> None:
        spec = ProcessSpec(argv=["sh", "-c", "cat; echo done; echo oops >&2; exit 5"])
        process = await start(provider, session_id, spec)
        for part in (b"one\n", b"two\n"):
            await process.write_stdin(part)
        await process.close_stdin()
        assert await collect(process) == (b"one\ntwo\ndone\n", b"oops\n", 5)
        await process.close()

    run(harness, scenario)


def test_stdin_streams_before_eof(harness: Harness) -> None:
    session_id = new_session_id()
    harness.create(session_id)

    async def scenario(provider: SandboxProvider) -> None:
        spec = ProcessSpec(
            argv=["sh", "-c", "read line; echo got-$line; read rest; echo end-$rest"]
        )
        process = await start(provider, session_id, spec)
        await process.write_stdin(b"first\n")
        assert await process.read_output() == (OutputStream.STDOUT, b"got-first\n")
        await process.write_stdin(b"second\n")
        await process.close_stdin()
        assert await collect(process) == (b"end-second\n", b"", 0)
        await process.close()

    run(harness, scenario)


def test_env_user_and_workdir_are_honoured(harness: Harness) -> None:
    session_id = new_session_id()
    harness.create(session_id)

    async def scenario(provider: SandboxProvider) -> None:
        value = "spaces 'quotes' \"dq\" $dollar \\back\nnewline ü"
        spec = ProcessSpec(
            argv=["sh", "-c", 'printf "%s" "$ODD"; echo; id -u; id -g; pwd'],
            env={"ODD": value},
            user=UserInfo("dev", 1000, 1000),
            workdir="/tmp",
        )
        out, err, code = await collect(await start(provider, session_id, spec))
        assert (err, code) == (b"", 0)
        assert out == value.encode() + b"\n1000\n1000\n/tmp\n"

    run(harness, scenario)


def test_terminal_merges_streams_and_resizes(harness: Harness) -> None:
    session_id = new_session_id()
    harness.create(session_id)

    async def scenario(provider: SandboxProvider) -> None:
        spec = ProcessSpec(
            argv=["sh", "-c", "stty rows 20 cols 70; stty size; echo err >&2; read x; stty size"],
            terminal=TerminalSize(cols=70, rows=20),
        )
        process = await start(provider, session_id, spec)
        seen = bytearray()
        while b"err" not in seen:
            chunk = await process.read_output()
            assert chunk is not None and chunk[0] is OutputStream.STDOUT
            seen += chunk[1]
        assert b"20 70" in seen
        await process.resize(TerminalSize(cols=132, rows=43))
        await process.write_stdin(b"go\r")
        out, _, code = await collect(process)
        assert b"43 132" in out and code == 0

    run(harness, scenario)


@pytest.mark.parametrize(("name", "status"), [("TERM", 143), ("INT", 130), ("KILL", 137)])
def test_signal_reaches_the_process(harness: Harness, name: str, status: int) -> None:
    session_id = new_session_id()
    harness.create(session_id)

    async def scenario(provider: SandboxProvider) -> None:
        process = await start(
            provider, session_id, ProcessSpec(argv=["sh", "-c", "echo up; exec sleep 600"])
        )
        assert await process.read_output() == (OutputStream.STDOUT, b"up\n")
        await process.signal(name)
        assert await collect(process) == (b"", b"", status)

    run(harness, scenario)


def test_hangup_ends_the_session_but_spares_the_detached(harness: Harness) -> None:
    session_id = new_session_id()
    sandbox_id = harness.create(session_id)
    script = (
        "nohup sleep 2001 >/dev/null 2>&1 & setsid sleep 2002 >/dev/null 2>&1 </dev/null & "
        "trap '' TERM; sleep 2003 & echo up; sleep 2004"
    )

    async def scenario(provider: SandboxProvider) -> None:
        process = await start(provider, session_id, ProcessSpec(argv=["sh", "-c", script]))
        assert await process.read_output() == (OutputStream.STDOUT, b"up\n")
        # Until they exec sleep, the background jobs still hold the session's stdio, and
        # would rightly be hung up: wait for them to have let go.
        await asyncio.to_thread(
            wait_until,
            lambda: (
                {"sleep 2001", "sleep 2002", "sleep 2003"} <= set(harness.processes(sandbox_id))
            ),
        )
        await process.hangup()
        await process.close()

    run(harness, scenario)

    def settled() -> list[str] | None:
        live = harness.processes(sandbox_id)
        return live if "sleep 2004" not in live else None

    live = wait_until(settled, message="hangup left the session running")
    assert "sleep 2003" not in live  # ignored TERM, but not HUP
    assert "sleep 2001" in live  # nohup
    assert "sleep 2002" in live  # setsid


def test_hangup_reaches_a_session_of_another_user(harness: Harness) -> None:
    # Regression: without CAP_SYS_PTRACE, a root helper cannot see another user's
    # descriptors, and found nothing to hang up.
    session_id = new_session_id()
    sandbox_id = harness.create(session_id)
    script = "sleep 2007 & echo up; sleep 2008"

    async def scenario(provider: SandboxProvider) -> None:
        spec = ProcessSpec(argv=["sh", "-c", script], user=UserInfo("dev", 1000, 1000))
        process = await start(provider, session_id, spec)
        assert await process.read_output() == (OutputStream.STDOUT, b"up\n")
        await process.hangup()
        await process.close()

    run(harness, scenario)
    wait_until(
        lambda: not {"sleep 2007", "sleep 2008"} & set(harness.processes(sandbox_id)),
        message="hangup left a non-root session running",
    )


def test_runtime_failure_arrives_as_output_not_an_exception(harness: Harness) -> None:
    session_id = new_session_id()
    harness.create(session_id)

    async def scenario(provider: SandboxProvider) -> None:
        out, err, code = await collect(
            await start(provider, session_id, ProcessSpec(argv=["/no/such/binary"]))
        )
        assert code in (126, 127)
        assert b"/no/such/binary" in err and out == b""

    run(harness, scenario)
