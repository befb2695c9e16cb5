"""Gateways under test: in-process (library API) and `sandbox-ssh serve` (CLI)."""

from __future__ import annotations

import asyncio
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Literal, TypeVar

import uvloop

from sandbox_ssh import Config, Server

T = TypeVar("T")

# The exec path every gateway of this run uses; set from pytest's --exec-path.
EXEC_PATH: Literal["runtime", "api"] = "runtime"


class LoopThread:
    """An event loop in a background thread, so tests can block on real clients.

    uvloop's, as `sandbox-ssh serve` runs on (its transports differ from asyncio's).
    """

    def __init__(self) -> None:
        self.loop = uvloop.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class InProcessGateway:
    """A Server from the library API, on a free loopback port."""

    def __init__(self, loop: LoopThread, config: Config) -> None:
        self.loop = loop
        self.config = config
        self.server = Server(config)
        loop.run(self.server.start())
        self.host, port_text = self.server.addr.rsplit(":", 1)
        self.port = int(port_text)
        self.host_key_path = Path(config.host_key_path)

    def stop(self) -> None:
        self.loop.run(self.server.stop())


class CliGateway:
    """`sandbox-ssh serve` as a subprocess; its log lines are collected as they come."""

    LISTENING = re.compile(r"listening on (\S+):(\d+)")

    def __init__(self, host_key_path: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.host_key_path = host_key_path
        self.args = ["--listen", "127.0.0.1:0", "--host-key", str(host_key_path), *args]
        if "--exec-path" not in args:
            self.args += ["--exec-path", EXEC_PATH]
        if "--drain-timeout" not in args:
            self.args += ["--drain-timeout", "10s"]  # SIGTERM drains; tests stop with it
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sandbox_ssh", "serve", *self.args],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
        try:
            self.host, self.port = self._wait_listening()
        except BaseException:
            self.process.kill()  # a gateway that never listened must not outlive its test
            self.process.wait()
            raise
        self._reader = threading.Thread(target=self._collect, daemon=True)
        self._reader.start()

    def _wait_listening(self, timeout: float = 30.0) -> tuple[str, int]:
        assert self.process.stderr is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.process.stderr], [], [], 0.5)
            if not ready:
                continue
            line = self.process.stderr.readline().decode(errors="replace")
            if not line:
                raise RuntimeError(f"sandbox-ssh serve exited: {''.join(self.lines)}")
            self.lines.append(line)
            match = self.LISTENING.search(line)
            if match:
                return match.group(1), int(match.group(2))
        raise RuntimeError(f"sandbox-ssh serve did not start: {''.join(self.lines)}")

    def _collect(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            with self._lock:
                self.lines.append(raw.decode(errors="replace"))

    def log_text(self) -> str:
        with self._lock:
            return "".join(self.lines)

    def wait_for_log(self, predicate: Callable[[str], bool], timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_text()
            if predicate(text):
                return text
            time.sleep(0.05)
        raise AssertionError(f"log never matched; log was:\n{self.log_text()}")

    def __enter__(self) -> CliGateway:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.terminate()

    def terminate(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout)
        self._reader.join(timeout)  # every line the process wrote is in log_text()
        return code


def serve_once(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run `sandbox-ssh serve ARGS` expecting it to stop by itself (a refused start-up)."""
    return subprocess.run(
        [sys.executable, "-m", "sandbox_ssh", "serve", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
