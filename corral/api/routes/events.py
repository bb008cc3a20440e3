"""REST route for reading events. Admins and auditors read everyone's; anyone else only their
own, so no caller can read another team's activity."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from corral.api.auth import authenticate
from corral.api.times import as_utc
from corral.errors import Forbidden
from corral.events.query import EventFilter, list_events
from corral.identity.access import Principal
from corral.identity.directory import normalise_email

router = APIRouter(tags=["events"])


@router.get("/events")
async def get_events(
    request: Request,
    caller: Annotated[Principal, Depends(authenticate)],
    kind: Annotated[str | None, Query(description="exact kind, or a prefix like admin.*")] = None,
    user: str | None = None,
    team: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[int | None, Query(ge=1, le=2**63 - 1, description="cursor: the `next` of the previous page")] = None,
) -> dict[str, Any]:
    """Events, newest first, with a cursor for the next page."""
    caller.require("read")
    since, until = as_utc(since, "since"), as_utc(until, "until")
    if user is not None:
        user = normalise_email(user)
    if not caller.roles.intersection({"admin", "auditor"}):
        if user is not None and user != caller.email:
            raise Forbidden("you can only read your own events; auditors and admins can read everyone's")
        if team is not None and team not in caller.teams:
            raise Forbidden("you can only read your own events; auditors and admins can read everyone's")
        user = caller.email
    async with request.app.state.corral.database.read() as connection:
        rows, next_cursor = await list_events(connection, EventFilter(kind, user, team, since, until), limit, before)
    for row in rows:
        row["time"] = row["time"].isoformat()
    return {"events": rows, "next": next_cursor}
