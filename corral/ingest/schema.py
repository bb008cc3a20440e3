"""What reporters send: the batch format of `POST /api/v1/ingest/events`, which the task-folder
importers, `corral ship` and the OTLP receiver also produce. It validates and nothing more; who
an event belongs to is decided by `corral.ingest.store`, never by what the reporter claims."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

KIND = r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$"
MAX_BATCH = 5000
MAX_ATTRIBUTES_BYTES = 16_384
EPOCH_MS_FROM = 100_000_000_000  # a number at least this big is milliseconds (1973 in ms, 5138 in s)

Text = Annotated[str, Field(max_length=200)]


def parse_time(value: Any) -> datetime:
    """An aware UTC datetime from ISO 8601 (with an offset) or epoch seconds or milliseconds."""
    if isinstance(value, bool):
        raise ValueError("a time is an ISO 8601 string or epoch milliseconds, not a boolean")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value < 0:
            raise ValueError("epoch time must be a positive number")
        seconds = value / 1000 if value >= EPOCH_MS_FROM else value
        try:
            return datetime.fromtimestamp(seconds, timezone.utc)
        except (OverflowError, OSError, ValueError):
            raise ValueError(f"epoch time {value} is out of range") from None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{value[:40]!r} is not an ISO 8601 time") from None
    else:
        raise ValueError("a time is an ISO 8601 string or epoch milliseconds")
    if parsed.tzinfo is None:
        raise ValueError("a time needs its offset, for example 2026-11-26T10:00:00Z")
    return parsed.astimezone(timezone.utc)


class IngestEvent(BaseModel):
    """One reported event. `key` makes sending it twice harmless: an event whose key is already
    stored is skipped. `user` names whom it belongs to (default: the caller); only admins may name
    someone else."""

    model_config = ConfigDict(extra="forbid")

    kind: str = Field(pattern=KIND, max_length=100, description="task.started, llm.request, command.exec, ...")
    time: datetime
    key: Text | None = Field(None, min_length=1, description="idempotency key, unique per event")
    user: str | None = Field(None, max_length=320)
    client: str | None = Field(None, max_length=50, description="roo-code, cline, claude-code, other")
    task_id: Text | None = None
    mode: str | None = Field(None, max_length=64)
    action: str | None = Field(None, max_length=100)
    resource: str | None = Field(None, max_length=2000)
    outcome: str | None = Field(None, max_length=32, description="ok, error, timeout, ...")
    duration_ms: float | None = Field(None, ge=0, allow_inf_nan=False)
    tokens_in: int | None = Field(None, ge=0, le=2**62)
    tokens_out: int | None = Field(None, ge=0, le=2**62)
    cost_usd: float | None = Field(None, ge=0, allow_inf_nan=False)
    attributes: dict[str, Any] = Field(default_factory=dict)

    @field_validator("time", mode="before")
    @classmethod
    def _time(cls, value: Any) -> datetime:
        return parse_time(value)

    @field_validator("attributes")
    @classmethod
    def _small(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(json.dumps(value, default=str)) > MAX_ATTRIBUTES_BYTES:
            raise ValueError(f"attributes are limited to {MAX_ATTRIBUTES_BYTES} bytes of JSON")
        return value


class IngestBatch(BaseModel):
    """A batch; its events are checked one by one (see `check_events`), so one bad event is
    reported by its index and the others are stored."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field("api", pattern=r"^[a-z][a-z0-9_.-]{0,31}$",
                        description="who reports: api, roo-code-import, cline-import, ship, ...")
    events: list[dict[str, Any]] = Field(max_length=MAX_BATCH)


def check_events(raw: list[dict[str, Any]]) -> tuple[list[IngestEvent], list[dict[str, Any]]]:
    """The valid events, and for each invalid one `{"index", "error"}` in words."""
    valid, rejected = [], []
    for index, item in enumerate(raw):
        try:
            valid.append(IngestEvent.model_validate(item))
        except ValidationError as error:
            problems = []
            for problem in error.errors()[:3]:
                where = ".".join(str(part) for part in problem["loc"]) or "event"
                problems.append(f"{where}: {'unknown field' if problem['type'] == 'extra_forbidden' else problem['msg']}")
            rejected.append({"index": index, "error": "; ".join(problems)})
    return valid, rejected
