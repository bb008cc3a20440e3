"""Reading the metrics back: the summary of a window (with the previous window, and groups) and
time series, from the rollup tables only, so the cost of a query grows with hours and tasks,
not with events.

Windows are whole hours (the rollup's grain): a window ending now ends at the next full hour."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, literal, select, union_all
from sqlalchemy.ext.asyncio import AsyncConnection

from corral.errors import InvalidRequest
from corral.metrics.definitions import METRICS, Volumes, metrics_of
from corral.metrics.fold import hour_of
from corral.store.tables import metric_hours, metric_tasks

GROUPS = {"team": "team", "user": "user_email", "mode": "mode", "model": "model", "provider": "provider",
          "client": "client", "tool": "tool"}
MAX_GROUPS = 500
HOUR = timedelta(hours=1)
_LENGTH = re.compile(r"^(\d{1,5})([hdw])$")
_HOURS = {"h": 1, "d": 24, "w": 168}


@dataclass(frozen=True)
class Scope:
    """Whose activity a query covers: everyone's, a team's or one user's."""

    team: str | None = None
    user: str | None = None

    def where(self, table: Any) -> list[Any]:
        clauses = []
        if self.team is not None:
            clauses.append(table.c.team == self.team)
        if self.user is not None:
            clauses.append(table.c.user_email == self.user)
        return clauses


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime

    @property
    def previous(self) -> "Window":
        return Window(self.start - (self.end - self.start), self.start)

    def as_dict(self) -> dict[str, str]:
        return {"start": _iso(self.start), "end": _iso(self.end)}


def _iso(time: datetime) -> str:
    return time.isoformat().replace("+00:00", "Z")


def window_of(now: datetime, length: timedelta | None, since: datetime | None, until: datetime | None) -> Window:
    """The whole hours a query covers: `length` back from the end of this hour, or since..until
    (since rounded down, until rounded up to the hour)."""
    if length is not None and since is not None:
        raise InvalidRequest("give either window or since/until, not both")
    end = until if until is not None else now
    end = hour_of(end) + (HOUR if end != hour_of(end) else timedelta(0))
    if since is not None:
        start = hour_of(since)
    else:
        length = length or timedelta(days=7)
        if length < HOUR:
            raise InvalidRequest("the shortest window is one hour (1h)")
        start = end - length
    if start >= end:
        raise InvalidRequest("since must be before until")
    if end - start > timedelta(days=400):
        raise InvalidRequest("a window is at most 400 days")
    return Window(start, end)


def length_of(text: str, name: str = "window") -> timedelta:
    """`12h`, `7d`, `2w` -> timedelta."""
    match = _LENGTH.match(text.strip().lower())
    if not match:
        raise InvalidRequest(f"{name} {text!r} is not a length; use a number and a unit: 12h, 7d, 2w")
    return timedelta(hours=int(match.group(1)) * _HOURS[match.group(2)])


def _group_column(table: Any, by: str | None) -> Any:
    if by is None:
        return literal("")
    return table.c[GROUPS[by]]


def check_group(by: str | None) -> str | None:
    if by is not None and by not in GROUPS:
        raise InvalidRequest(f"by must be one of {', '.join(GROUPS)}")
    return by


async def _task_volumes(connection: AsyncConnection, window: Window, scope: Scope, by: str | None,
                        idle_before: datetime) -> dict[str, Volumes]:
    """Tasks that ended in the window, by outcome. A task with no outcome whose last event is
    older than `idle_before` ended (abandoned) at that event."""
    if by == "tool":
        return {}
    group = _group_column(metric_tasks, by).label("grp")
    ended = select(group, metric_tasks.c.outcome.label("outcome"), metric_tasks.c.rollbacks).where(
        metric_tasks.c.outcome.is_not(None), metric_tasks.c.outcome_at >= window.start,
        metric_tasks.c.outcome_at < window.end, *scope.where(metric_tasks))
    idle = select(group, literal("abandoned").label("outcome"), metric_tasks.c.rollbacks).where(
        metric_tasks.c.outcome.is_(None), metric_tasks.c.last_at >= window.start,
        metric_tasks.c.last_at < min(window.end, idle_before), *scope.where(metric_tasks))
    both = union_all(ended, idle).subquery()
    rows = await connection.execute(
        select(both.c.grp, both.c.outcome, func.count(), func.sum(both.c.rollbacks))
        .group_by(both.c.grp, both.c.outcome))
    volumes: dict[str, Volumes] = {}
    for grp, outcome, count, rollbacks in rows:
        found = volumes.setdefault(grp, Volumes())
        setattr(found, outcome, getattr(found, outcome) + count)
        found.tasks += count
        found.rollbacks += int(rollbacks or 0)
    return volumes


async def _medians(connection: AsyncConnection, window: Window, scope: Scope, by: str | None
                   ) -> dict[str, tuple[float, int]]:
    """Median cycle time of tasks completed in the window: (median, samples) per group, computed
    in the database (window functions on both SQLite and PostgreSQL)."""
    if by == "tool":
        return {}
    group = _group_column(metric_tasks, by).label("grp")
    ranked = select(
        group, metric_tasks.c.cycle_s.label("cycle"),
        func.row_number().over(partition_by=group, order_by=metric_tasks.c.cycle_s).label("position"),
        func.count().over(partition_by=group).label("samples"),
    ).where(metric_tasks.c.outcome == "completed", metric_tasks.c.outcome_at >= window.start,
            metric_tasks.c.outcome_at < window.end, metric_tasks.c.cycle_s.is_not(None),
            *scope.where(metric_tasks)).subquery()
    rows = await connection.execute(
        select(ranked.c.grp, func.avg(ranked.c.cycle), func.max(ranked.c.samples))
        .where(ranked.c.position.in_([(ranked.c.samples + 1) // 2, (ranked.c.samples + 2) // 2]))
        .group_by(ranked.c.grp))
    return {grp: (float(value), int(samples)) for grp, value, samples in rows}


_SUMS = ("requests", "request_errors", "tokens_in", "tokens_out", "spend_usd", "calls", "call_errors",
         "call_timeouts", "commands", "command_errors")


async def _hour_volumes(connection: AsyncConnection, window: Window, scope: Scope, by: str | None
                        ) -> dict[str, dict[str, float]]:
    group = _group_column(metric_hours, by).label("grp")
    tool_rows = metric_hours.c.tool != "" if by == "tool" else metric_hours.c.tool == ""
    rows = await connection.execute(
        select(group, *(func.sum(metric_hours.c[name]) for name in _SUMS))
        .where(metric_hours.c.hour >= window.start, metric_hours.c.hour < window.end, tool_rows,
               *scope.where(metric_hours))
        .group_by(group))
    return {row[0]: dict(zip(_SUMS, (value or 0 for value in row[1:]))) for row in rows}


def _merge(tasks: Volumes | None, sums: dict[str, float] | None) -> Volumes:
    volumes = tasks or Volumes()
    sums = sums or {}
    volumes.requests = int(sums.get("requests", 0))
    volumes.request_errors = int(sums.get("request_errors", 0))
    volumes.tokens_in = int(sums.get("tokens_in", 0))
    volumes.tokens_out = int(sums.get("tokens_out", 0))
    volumes.spend_usd = float(sums.get("spend_usd", 0.0))
    volumes.commands = int(sums.get("commands", 0))
    volumes.tool_calls = int(sums.get("calls", 0)) - volumes.commands
    volumes.call_errors = int(sums.get("call_errors", 0))
    volumes.call_timeouts = int(sums.get("call_timeouts", 0))
    volumes.command_errors = int(sums.get("command_errors", 0))
    return volumes


async def _measure(connection: AsyncConnection, window: Window, scope: Scope, by: str | None,
                   idle_before: datetime) -> dict[str, dict[str, Any]]:
    tasks = await _task_volumes(connection, window, scope, by, idle_before)
    sums = await _hour_volumes(connection, window, scope, by)
    medians = await _medians(connection, window, scope, by)
    measured = {}
    for grp in set(tasks) | set(sums) | set(medians):
        volumes = _merge(tasks.get(grp), sums.get(grp))
        middle, samples = medians.get(grp, (None, 0))
        measured[grp] = {"metrics": metrics_of(volumes, middle, samples), "volumes": volumes.as_dict()}
    return measured


def _empty() -> dict[str, Any]:
    return {"metrics": metrics_of(Volumes(), None, 0), "volumes": Volumes().as_dict()}


async def summarise(connection: AsyncConnection, window: Window, scope: Scope, by: str | None,
                    idle_before: datetime) -> dict[str, Any]:
    """The summary contract of GET /api/v1/metrics/summary (docs/metrics.md)."""
    current = (await _measure(connection, window, scope, None, idle_before)).get("", _empty())
    previous = (await _measure(connection, window.previous, scope, None, idle_before)).get("", _empty())
    summary: dict[str, Any] = {"window": window.as_dict(), **current, "previous": {"window": window.previous.as_dict(),
                                                                                   **previous}}
    if by is not None:
        groups = await _measure(connection, window, scope, by, idle_before)
        ordered = sorted(groups.items(), key=lambda item: (-item[1]["volumes"]["tasks"],
                                                           -item[1]["volumes"]["spend_usd"], str(item[0])))
        summary["by"] = by
        summary["groups"] = [{"key": {by: key if key != "" else None}, **value} for key, value in ordered[:MAX_GROUPS]]
        summary["groups_truncated"] = len(ordered) > MAX_GROUPS
    return summary


async def series(connection: AsyncConnection, window: Window, scope: Scope, metric: str, step: timedelta,
                 idle_before: datetime) -> list[dict[str, Any]]:
    """One metric per step across the window: [{start, value, samples}]."""
    if metric not in METRICS and metric not in Volumes.__dataclass_fields__:
        raise InvalidRequest(f"metric must be one of {', '.join(METRICS)} or a volume "
                             f"({', '.join(Volumes.__dataclass_fields__)})")
    if step < HOUR or step.total_seconds() % 3600:
        raise InvalidRequest("step must be whole hours: 1h, 6h, 1d")
    if (window.end - window.start) / step > 2000:
        raise InvalidRequest("that is more than 2000 points; use a longer step or a shorter window")
    points = []
    start = window.start
    while start < window.end:
        bucket = Window(start, min(start + step, window.end))
        measured = (await _measure(connection, bucket, scope, None, idle_before)).get("", _empty())
        if metric in METRICS:
            value = measured["metrics"][metric]
        else:
            amount = measured["volumes"][metric]
            value = {"value": amount, "samples": amount}
        points.append({"start": _iso(bucket.start), "end": _iso(bucket.end), **value})
        start = bucket.end
    return points

