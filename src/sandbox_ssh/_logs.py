"""Log lines as text or as JSON objects, with the facts of each event as fields.

Code logs with ``extra=fields(...)``: an event name and the facts (session,
remote address, sandbox, user, duration, outcome, and the connection ID that
every line of one connection carries). The text format writes the message
with ``conn=ID`` appended; the JSON format writes one object per line with the
message and every fact. Neither ever contains an environment value or a token:
nothing logs them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import warnings
from collections.abc import Iterator, Mapping, MutableMapping
from datetime import UTC, datetime
from typing import Any

# The attributes a LogRecord has of its own; anything else came in through ``extra``.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


def fields(event: str, **facts: Any) -> dict[str, Any]:
    """``extra`` for a log call: the event's name and its facts (None values are dropped)."""
    return {"event": event, **{key: value for key, value in facts.items() if value is not None}}


def _facts(record: logging.LogRecord) -> dict[str, Any]:
    return {key: value for key, value in vars(record).items() if key not in _RECORD_ATTRIBUTES}


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        connection = getattr(record, "connection", None)
        return f"{text} conn={connection}" if connection else text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_facts(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class ConnectionLog(logging.LoggerAdapter[logging.Logger]):
    """A logger whose every line carries one connection's ID (and what is known of it)."""

    def __init__(self, logger: logging.Logger, connection: str, context: Mapping[str, Any]):
        super().__init__(logger, {"connection": connection})
        self._context = context

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        extra = {**self._context, "connection": self.extra["connection"] if self.extra else None}
        extra.update(kwargs.get("extra") or {})
        kwargs["extra"] = extra
        return msg, kwargs


def configure(level: str, log_format: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Python's warnings become log lines in the same format (logger "py.warnings").
    warnings.showwarning = _log_warning
    release_held_warnings()
    # asyncssh logs commands at INFO and env values at debug level; both can carry secrets.
    logging.getLogger("asyncssh").setLevel(logging.WARNING)


# Warnings raised while the package's dependencies were imported (cryptography's
# deprecations, through asyncssh), held until logging is set up: printed raw, they
# would be the only lines of a JSON log that are not JSON.
_held_warnings: list[warnings.WarningMessage] = []


@contextlib.contextmanager
def holding_warnings() -> Iterator[None]:
    """Record the warnings raised inside (the filters in force still decide which)."""
    with warnings.catch_warnings(record=True) as caught:
        yield
    _held_warnings.extend(caught)


def _log_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: object = None,
    line: str | None = None,
) -> None:
    """A warning as one log line (no source excerpt), on the logger "py.warnings"."""
    text = " ".join(str(message).split())
    logging.getLogger("py.warnings").warning(
        "%s: %s (%s:%d)", category.__name__, text, filename, lineno
    )


def release_held_warnings() -> None:
    """Issue the held warnings again, now that whoever embeds us may route them."""
    while _held_warnings:
        held = _held_warnings.pop(0)
        warnings.warn_explicit(held.message, held.category, held.filename, held.lineno)
