"""Session recording as asciicast v2 files (asciinema's format), written as the session runs.

One file per recorded channel, in ``DIR/<session ID>/`` (0700), each file 0600:
a header line (size, start time, session, sandbox, user, command), then one
JSON line per event: ``[seconds, "o", text]`` for output, ``"r"`` for a resize
(``"COLSxROWS"``), ``"i"`` for input only when input recording is on (it
captures passwords), and ``"m"`` for a marker. Lines are flushed within a
second, so a crash loses at most the last second. Past the size limit a marker
says so and recording stops; the session goes on.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("sandbox_ssh.recording")

_FLUSH_AFTER = 1.0
_MARKER_ROOM = 128  # kept free under the size limit for the marker that ends the file


@dataclass(frozen=True)
class RecordingPolicy:
    directory: Path
    exec_too: bool = False  # also record sessions without a PTY
    record_input: bool = False
    max_bytes: int = 100 * 1024 * 1024


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in name)[:128] or "_"


class Recorder:
    def __init__(
        self,
        policy: RecordingPolicy,
        session_id: str,
        width: int,
        height: int,
        facts: dict[str, Any],
    ) -> None:
        self._policy = policy
        directory = policy.directory / _safe(session_id)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        started = time.time()
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started))
        self.path = directory / f"{stamp}-{secrets.token_hex(4)}.cast"
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self._file = os.fdopen(fd, "w", encoding="utf-8", buffering=1 << 16)
        self._started = time.monotonic()
        self._size = 0
        self._stopped = False
        self._flush_pending: asyncio.TimerHandle | None = None
        self._decoders = {
            "o": codecs.getincrementaldecoder("utf-8")(errors="replace"),
            "i": codecs.getincrementaldecoder("utf-8")(errors="replace"),
        }
        header = {
            "version": 2,
            "width": width,
            "height": height,
            "timestamp": int(started),
            "title": f"sandbox-ssh session {session_id}",
            "env": {"TERM": str(facts.get("term") or "")},
            "sandbox_ssh": {"session": session_id, **facts},
        }
        self._line(json.dumps(header, ensure_ascii=False))

    def output(self, data: bytes) -> None:
        self._event("o", data)

    def input(self, data: bytes) -> None:
        if self._policy.record_input:
            self._event("i", data)

    def resize(self, cols: int, rows: int) -> None:
        self._emit("r", f"{cols}x{rows}")

    def close(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._flush_pending is not None:
            self._flush_pending.cancel()
        try:
            self._file.close()
        except OSError as error:
            log.warning("recording %s: %s", self.path, error)

    def _event(self, kind: str, data: bytes) -> None:
        if self._stopped:
            return
        text = self._decoders[kind].decode(data)
        if text:
            self._emit(kind, text)

    def _emit(self, kind: str, text: str) -> None:
        if self._stopped:
            return
        elapsed = round(time.monotonic() - self._started, 6)
        line = json.dumps([elapsed, kind, text], ensure_ascii=False)
        limit = self._policy.max_bytes
        if self._size + len(line.encode()) + 1 + _MARKER_ROOM > limit:
            marker = f"sandbox-ssh: recording stopped at the size limit ({limit} bytes)"
            self._line(json.dumps([elapsed, "m", marker]))
            self.close()
            return
        self._line(line)

    def _line(self, line: str) -> None:
        try:
            self._file.write(line + "\n")
        except OSError as error:
            log.warning("recording %s stopped: %s", self.path, error)
            self.close()
            return
        self._size += len(line.encode()) + 1
        if self._flush_pending is None:
            self._flush_pending = asyncio.get_running_loop().call_later(_FLUSH_AFTER, self._flush)

    def _flush(self) -> None:
        self._flush_pending = None
        if not self._stopped:
            try:
                self._file.flush()
            except OSError as error:
                log.warning("recording %s stopped: %s", self.path, error)
                self.close()
