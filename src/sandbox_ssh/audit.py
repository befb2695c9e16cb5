"""`--audit-log PATH`: one JSON object per line, reopened on SIGHUP for log rotation.

Events: connection.open / connection.close (session, remote address, client
version, duration, bytes each way), auth (method, key fingerprint, result),
exec (command line), shell (pty, term), subsystem, exit (status), forward
(kind, target) and forward.refused (reason). Environment values, tokens and
keys' private parts are never written.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import IO

log = logging.getLogger("sandbox_ssh.audit")


class AuditLog:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._handle: IO[str] | None = None
        self.reopen()

    def reopen(self) -> None:
        """Close and reopen the file: after rotation, writing continues in the new one."""
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        handle = os.fdopen(fd, "a", buffering=1, encoding="utf-8")
        with self._lock:
            old, self._handle = self._handle, handle
        if old is not None:
            old.close()

    def record(self, event: str, fields: dict[str, object]) -> None:
        entry = {"time": round(time.time(), 3), "event": event, **fields}
        line = json.dumps(entry, ensure_ascii=False, default=str, separators=(",", ":"))
        with self._lock:
            if self._handle is None:
                return
            try:
                self._handle.write(line + "\n")
            except OSError as error:
                log.warning("cannot write the audit log: %s", error)

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None
