"""Reading events back: filters and keyset pagination (newest first), shared by the REST API
and everything computed from events."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from corral.store.tables import events

MAX_PAGE = 1000


@dataclass(frozen=True)
class EventFilter:
    kind: str | None = None  # exact, or a prefix ending in "*": "admin.*"
    user_email: str | None = None
    team: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def list_events(
    connection: AsyncConnection, where: EventFilter, limit: int = 100, before_id: int | None = None
) -> tuple[list[dict[str, Any]], int | None]:
    """A page of events and the cursor for the next (older) page, or None at the end."""
    query = select(events).order_by(events.c.id.desc()).limit(min(limit, MAX_PAGE) + 1)
    if where.kind:
        if where.kind.endswith("*"):
            query = query.where(events.c.kind.like(_escape_like(where.kind[:-1]) + "%", escape="\\"))
        else:
            query = query.where(events.c.kind == where.kind)
    if where.user_email:
        query = query.where(events.c.user_email == where.user_email)
    if where.team:
        query = query.where(events.c.team == where.team)
    if where.since:
        query = query.where(events.c.time >= where.since)
    if where.until:
        query = query.where(events.c.time < where.until)
    if before_id is not None:
        query = query.where(events.c.id < before_id)
    rows = [dict(row._mapping) for row in await connection.execute(query)]
    page = rows[: min(limit, MAX_PAGE)]
    next_cursor = page[-1]["id"] if len(rows) > len(page) else None
    return page, next_cursor
