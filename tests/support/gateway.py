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


class StderrLines:
    """A child's stderr as lines, read as they come.

    Read with os.read on the bare descriptor: a buffered readline() may take in two lines
    at once and leave the second where select() cannot see it, so that a gateway's
    "listening on" line written together with the one before it went unseen until the
    wait timed out (test_regression_a_line_written_with_the_one_before_went_unseen).
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._partial = b""  # the start of a line not yet ended
        self._collector: threading.Thread | None = None

    def _read(self) -> list[str] | None:
        """The lines one read completes; None at EOF."""
        data = os.read(self.fd, 65536)
        if data:
            *complete, self._partial = (self._partial + data).split(b"\n")
            lines = [line.decode(errors="replace") + "\n" for line in complete]
        elif self._partial:
            lines, self._partial = [self._partial.decode(errors="replace")], b""
        else:
            return None
        with self._lock:
            self.lines += lines
        return lines

    def wait_for(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        """The first line matching ``pattern``; RuntimeError at EOF or after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.fd], [], [], 0.5)
            if not ready:
                continue
            lines = self._read()
            if lines is None:
                raise RuntimeError(f"it exited before a line matched: {self.text()}")
            for line in lines:
                match = pattern.search(line)
                if match:
                    return match
        raise RuntimeError(f"no line matched within {timeout:g} s: {self.text()}")

    def collect(self) -> None:
        """From now on, read on a thread of its own until EOF."""

        def run() -> None:
            while self._read() is not None:
                pass

        self._collector = threading.Thread(target=run, daemon=True)
        self._collector.start()

    def join(self, timeout: float) -> None:
        if self._collector is not None:
            self._collector.join(timeout)

    def text(self) -> str:
        with self._lock:
            return "".join(self.lines)


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
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sandbox_ssh", "serve", *self.args],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
        assert self.process.stderr is not None
        self.stderr = StderrLines(self.process.stderr.fileno())
        try:
            listening = self.stderr.wait_for(self.LISTENING, timeout=30.0)
        except BaseException:
            self.process.kill()  # a gateway that never listened must not outlive its test
            self.process.wait()
            raise
        self.host, self.port = listening.group(1), int(listening.group(2))
        self.stderr.collect()

    FRONT = re.compile(r"front \d+ \(pid (\d+)\) runs as")

    @property
    def front_pid(self) -> int:
        """The process that reads the clients' bytes: the first front when serve started
        as root and separated privileges (the serve process is then the broker), else
        serve's own."""
        found = self.FRONT.search(self.log_text())
        return int(found.group(1)) if found else self.process.pid

    def log_text(self) -> str:
        return self.stderr.text()

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
        self.stderr.join(timeout)  # every line the process wrote is in log_text()
        return code


def serve_once(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run `sandbox-ssh serve ARGS` expecting it to stop by itself (a refused start-up)."""
    return subprocess.run(
        [sys.executable, "-m", "sandbox_ssh", "serve", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
