"""The event: the one record of something that happened. Metrics, alerts, reports and the
console are computed from events only. An event never carries a secret; payloads are kept
elsewhere (or not at all) and referred to by hash in `attributes`."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from typing import Any


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Event:
    kind: str  # what happened: "admin.key.created", "auth.failed", "llm.request", ...
    action: str | None = None  # the policy action attempted: "admin.key.create", "tool.call"
    user_email: str | None = None
    team: str | None = None
    key_id: int | None = None
    client: str | None = None
    task_id: str | None = None
    mode: str | None = None
    resource: str | None = None
    decision: str | None = None  # allow | confirm | approve | deny
    outcome: str | None = None  # ok | error | timeout | ...
    duration_ms: float | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    cost_usd: float | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    time: datetime = field(default_factory=utcnow)
    source: str | None = None  # who reported it: None for Corral itself, "roo-code-import", "otlp", "api", ...
    event_key: str | None = None  # idempotency key of a reported event: the same key is stored once

    def row(self) -> dict[str, Any]:
        """The event as a table row. NUL characters (which PostgreSQL refuses in text) become
        U+FFFD, so no caller's odd input can stop an event from being written."""
        return {name: _without_nul(getattr(self, name)) for name in _FIELDS}


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_without_nul(key): _without_nul(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_without_nul(item) for item in value]
    return value


_FIELDS = tuple(item.name for item in fields(Event))
