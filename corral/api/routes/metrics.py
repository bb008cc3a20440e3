"""REST for the five metrics: `/metrics/summary` (a window, the previous one, groups) and
`/metrics/series` (one metric over time). Admins and auditors read everyone's; a team member
reads their team's totals (never broken down by person); anyone else reads their own."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import PlainTextResponse

from corral.api.auth import authenticate
from corral.errors import Forbidden, InvalidRequest
from corral.events.model import Event
from corral.identity.access import Principal
from corral.identity.directory import normalise_email
from corral.metrics.fold import abandoned_before
from corral.metrics.prometheus import gauges_of, render
from corral.metrics.rollup import folded_up_to
from corral.metrics.summary import GROUPS, Scope, Window, length_of, series, summarise, window_of

log = logging.getLogger("corral.metrics")
router = APIRouter(tags=["metrics"])
Caller = Annotated[Principal, Depends(authenticate)]
SEES_ALL = ("admin", "auditor")
ROLLUP_WAIT_S = 5.0  # a query first folds what is new, for at most this long


def _time(text: str | None, name: str) -> datetime | None:
    """ISO 8601 with a zone, or a date (midnight UTC)."""
    if text is None:
        return None
    try:
        if len(text) == 10:
            return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"{name} {text[:40]!r} is not a date (2026-11-19) or a time with its zone "
                             "(2026-11-19T08:00:00Z)") from None
    if parsed.tzinfo is None:
        raise InvalidRequest(f"{name} needs a time zone, e.g. 2026-11-19T08:00:00Z")
    return parsed.astimezone(timezone.utc)


def _scope(caller: Principal, team: str | None, user: str | None, by: str | None) -> Scope:
    caller.require("read")
    if user is not None:
        user = normalise_email(user)
    if caller.roles.intersection(SEES_ALL):
        return Scope(team, user)
    if team is not None:
        if team not in caller.teams or user not in (None, caller.email):
            raise Forbidden("you can read the metrics of your own teams and your own; auditors and admins read everyone's")
        if by == "user":
            raise Forbidden("a team's metrics by person are for auditors and admins")
        return Scope(team, user)
    if user not in (None, caller.email):
        raise Forbidden("you can read your own metrics; auditors and admins read everyone's")
    return Scope(None, caller.email)


async def _window(request: Request, window: str | None, since: str | None, until: str | None) -> Window:
    corral = request.app.state.corral
    try:
        await corral.rollup.catch_up(budget_s=ROLLUP_WAIT_S)
    except Exception:  # retried by the next query and the sweeper; meanwhile answer from what is folded
        log.exception("folding new events into the metrics failed")
    length = length_of(window) if window else None
    return window_of(datetime.now(timezone.utc), length, _time(since, "since"), _time(until, "until"))


Group = Annotated[str | None, Query(pattern="^(" + "|".join(GROUPS) + ")$", description="break down by")]


@router.get("/metrics/summary")
async def get_summary(request: Request, caller: Caller, window: Annotated[str | None, Query(max_length=8)] = None,
                      since: Annotated[str | None, Query(max_length=40)] = None,
                      until: Annotated[str | None, Query(max_length=40)] = None, by: Group = None,
                      team: Annotated[str | None, Query(max_length=100)] = None,
                      user: Annotated[str | None, Query(max_length=320)] = None) -> dict[str, Any]:
    """The five metrics of a window (default the last 7 days), with their samples, the volumes
    behind them, the previous window, and groups when `by` is given."""
    scope = _scope(caller, team, user, by)
    span = await _window(request, window, since, until)
    corral = request.app.state.corral
    async with corral.database.read() as connection:
        summary = await summarise(connection, span, scope, by, _idle_before(corral))
    return {"scope": {"team": scope.team, "user": scope.user}, **summary}


@router.get("/metrics/series")
async def get_series(request: Request, caller: Caller, metric: Annotated[str, Query(max_length=40)],
                     step: Annotated[str, Query(max_length=8)] = "1h",
                     window: Annotated[str | None, Query(max_length=8)] = None,
                     since: Annotated[str | None, Query(max_length=40)] = None,
                     until: Annotated[str | None, Query(max_length=40)] = None,
                     team: Annotated[str | None, Query(max_length=100)] = None,
                     user: Annotated[str | None, Query(max_length=320)] = None) -> dict[str, Any]:
    """One metric (or volume) per step, for charts."""
    scope = _scope(caller, team, user, None)
    span = await _window(request, window or ("24h" if since is None else None), since, until)
    corral = request.app.state.corral
    async with corral.database.read() as connection:
        points = await series(connection, span, scope, metric, length_of(step, "step"), _idle_before(corral))
    return {"metric": metric, "step": step, "window": span.as_dict(), "points": points}


@router.get("/metrics/status")
async def rollup_status(request: Request, caller: Caller) -> dict[str, Any]:
    """How far the rollups are: the last event folded, the newest event, and whether a rebuild runs."""
    caller.require("read")
    corral = request.app.state.corral
    async with corral.database.read() as connection:
        folded, newest = await folded_up_to(connection)
    rebuilding = corral.rebuilding is not None and not corral.rebuilding.done()
    return {"folded": folded, "newest": newest, "rebuilding": rebuilding}


@router.post("/metrics/rebuild", status_code=202)
async def rebuild(request: Request, caller: Caller) -> dict[str, Any]:
    """Throw the rollups away and fold every event again, in the background (admins)."""
    caller.require("admin", "admin")
    corral = request.app.state.corral
    if corral.rebuilding is None or corral.rebuilding.done():
        corral.rebuilding = asyncio.create_task(corral.rollup.rebuild(), name="corral-metrics-rebuild")
        corral.recorder.emit(Event(kind="admin.metrics.rebuilt", action="admin.metrics.rebuild", user_email=caller.email,
                                   team=caller.team, key_id=caller.key_id, resource="metrics"))
    return await rollup_status(request, caller)


def _idle_before(corral: Any) -> datetime:
    return abandoned_before(datetime.now(timezone.utc), corral.settings.task_idle_seconds)


exposition = APIRouter(tags=["metrics"])
GAUGE_SECONDS = 15.0  # the rollup gauges are recomputed at most this often, however often Prometheus scrapes


@exposition.get("/metrics", response_class=PlainTextResponse)
async def prometheus(request: Request, caller: Caller) -> PlainTextResponse:
    """Prometheus exposition (a `read` key of an admin or auditor: Prometheus sends it with
    `authorization: {credentials_file: ...}`)."""
    caller.require("read", *SEES_ALL)
    corral = request.app.state.corral
    cached = corral.gauges
    if cached is None or time.monotonic() - cached[0] > GAUGE_SECONDS:
        span = await _window(request, "24h", None, None)
        async with corral.database.read() as connection:
            summary = await summarise(connection, span, Scope(), "team", _idle_before(corral))
            folded, newest = await folded_up_to(connection)
        cached = (time.monotonic(), gauges_of(summary), newest - folded)
        corral.gauges = cached
    process = {
        "corral_events_written_total": ("counter", "Events this replica's recorder wrote.", corral.recorder.written),
        "corral_events_dropped_total": ("counter", "Events this replica dropped (queue full, database refused).",
                                        corral.recorder.dropped),
        "corral_metrics_rollup_lag_events": ("gauge", "Events not yet folded into the metric rollups.", cached[2]),
    }
    return PlainTextResponse(render(corral.counters, cached[1], process),
                             media_type="text/plain; version=0.0.4; charset=utf-8")
