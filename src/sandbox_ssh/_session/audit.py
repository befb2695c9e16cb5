"""The audit trail's interface as the layers see it: events with fields, never secrets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


class AuditSink(Protocol):
    def record(self, event: str, fields: dict[str, object]) -> None: ...


class NoAudit:
    def record(self, event: str, fields: dict[str, object]) -> None:
        pass


@dataclass
class ConnectionAudit:
    """Stamps every event of one connection with its identity."""

    sink: AuditSink
    connection_id: str
    context: dict[str, object] = field(default_factory=dict)

    def record(self, event: str, **fields: object) -> None:
        self.sink.record(event, {"connection": self.connection_id, **self.context, **fields})
