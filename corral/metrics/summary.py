"""Reading the metrics back: the summary of a window (with the previous window, and groups) and
time series, from the rollup tables only, so the cost of a query grows with hours and tasks,
not with events.

Windows are whole hours (the rollup's grain): a window ending now ends at the next full hour."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, Table, bindparam, case, cast, func, literal, select, text, union_all
from sqlalchemy.ext.asyncio import AsyncConnection

from corral.errors import InvalidRequest
from corral.metrics.definitions import METRICS, Volumes, metrics_of
from corral.metrics.fold import hour_of
from corral.store.tables import HOUR_MEASURES, UTCDateTime, metric_days, metric_hours, metric_tasks

GROUPS = {"team": "team", "user": "user_email", "mode": "mode", "model": "model", "provider": "provider",
          "client": "client", "tool": "tool"}
MAX_GROUPS = 500
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
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


# A grouping names each row's group: (table, the time that places the row in a window) -> expression.
Grouping = Callable[[Table, Any], Any]


def _overall_group(_table: Table, _time: Any) -> Any:
    return literal("")


def by_dimension(by: str | None) -> Grouping:
    if by is None:
        return _overall_group
    return lambda table, _time: table.c[GROUPS[by]]


def by_step(start: datetime, step: timedelta, dialect: str) -> Grouping:
    """The step a row's time falls in, counted from `start` (for series)."""
    def step_of(_table: Table, time: Any) -> Any:
        if dialect == "sqlite":  # times are stored as text there
            seconds = cast(func.strftime("%s", time), BigInteger)
        else:
            seconds = cast(func.extract("epoch", time), BigInteger)
        return (seconds - int(start.timestamp())) // int(step.total_seconds())
    return step_of


async def _task_volumes(connection: AsyncConnection, window: Window, scope: Scope, group: Grouping,
                        idle_before: datetime) -> dict[Any, Volumes]:
    """Tasks that ended in the window, by outcome. A task with no outcome whose last event is
    older than `idle_before` ended (abandoned) at that event. Both reads are covered by an index."""
    tasks = metric_tasks.c
    ended = select(group(metric_tasks, tasks.outcome_at).label("grp"), *_counted(tasks.outcome), tasks.rollbacks) \
        .where(tasks.outcome_at >= window.start, tasks.outcome_at < window.end, tasks.outcome.is_not(None),
               *scope.where(metric_tasks))
    idle = select(group(metric_tasks, tasks.last_at).label("grp"), *_counted(literal("abandoned")), tasks.rollbacks) \
        .where(tasks.last_at >= window.start, tasks.last_at < min(window.end, idle_before), tasks.outcome.is_(None),
               *scope.where(metric_tasks))
    both = union_all(ended, idle).subquery()
    rows = await connection.execute(_summed(both.c.grp, [*(both.c[name] for name in _OUTCOMES), both.c.rollbacks],
                                            group))
    volumes: dict[Any, Volumes] = {}
    for grp, *counts, rollbacks in rows:
        found = volumes[grp] = Volumes(**{name: int(count or 0) for name, count in zip(_OUTCOMES, counts)})
        found.tasks = found.completed + found.failed + found.abandoned
        found.rollbacks = int(rollbacks or 0)
    return volumes


_OUTCOMES = ("completed", "failed", "abandoned")


def _counted(outcome: Any) -> list[Any]:
    """One 0/1 column per outcome: summed without grouping by outcome (a sort fewer)."""
    return [case((outcome == name, 1), else_=0).label(name) for name in _OUTCOMES]


# The middle completed tasks of a window on SQLite: walking them in cycle-time order by the index
# (SQLite's planner would rather sort the window's tasks, several times slower).
_SQLITE_MIDDLE = text(
    "SELECT cycle_s FROM metric_tasks INDEXED BY ix_metric_tasks_cycle WHERE outcome = 'completed' "
    "AND cycle_s IS NOT NULL AND outcome_at >= :start AND outcome_at < :end AND (:team IS NULL OR team = :team) "
    "AND (:user IS NULL OR user_email = :user) ORDER BY cycle_s LIMIT :count OFFSET :skip"
).bindparams(bindparam("start", type_=UTCDateTime()), bindparam("end", type_=UTCDateTime()))


async def _medians(connection: AsyncConnection, window: Window, scope: Scope, group: Grouping
                   ) -> dict[Any, tuple[float, int]]:
    """Median cycle time of tasks completed in the window: (median, samples) per group, computed
    in the database: PostgreSQL's percentile_cont; on SQLite the middle rows by OFFSET for the
    whole window, window functions for groups."""
    tasks = metric_tasks.c
    completed = (tasks.outcome_at >= window.start, tasks.outcome_at < window.end, tasks.outcome == "completed",
                 tasks.cycle_s.is_not(None), *scope.where(metric_tasks))
    grp = group(metric_tasks, tasks.outcome_at).label("grp")
    if connection.dialect.name == "postgresql":
        rows = await connection.execute(
            select(grp, func.percentile_cont(0.5).within_group(tasks.cycle_s), func.count())
            .where(*completed).group_by(grp))
        return {key: (float(value), int(samples)) for key, value, samples in rows}
    if group is _overall_group:
        samples = (await connection.execute(select(func.count()).where(*completed))).scalar_one()
        if not samples:
            return {}
        middle = (await connection.execute(_SQLITE_MIDDLE, {
            "start": window.start, "end": window.end, "team": scope.team, "user": scope.user,
            "count": 2 - samples % 2, "skip": (samples - 1) // 2})).scalars().all()
        return {"": (sum(middle) / len(middle), samples)}
    ranked = select(
        grp, tasks.cycle_s.label("cycle"),
        func.row_number().over(partition_by=grp, order_by=tasks.cycle_s).label("position"),
        func.count().over(partition_by=grp).label("samples"),
    ).where(*completed).subquery()
    rows = await connection.execute(
        select(ranked.c.grp, func.avg(ranked.c.cycle), func.max(ranked.c.samples))
        .where(ranked.c.position.in_([(ranked.c.samples + 1) // 2, (ranked.c.samples + 2) // 2]))
        .group_by(ranked.c.grp))
    return {key: (float(value), int(samples)) for key, value, samples in rows}


async def _hour_volumes(connection: AsyncConnection, window: Window, scope: Scope, group: Grouping, tools: bool,
                        whole_days: bool = True) -> dict[Any, dict[str, float]]:
    """Sums of requests and calls per group: from day rows for the whole days of the window
    (when `whole_days`: not for groups finer than a day), from hour rows for the rest."""
    found: dict[Any, dict[str, float]] = {}
    for table, time, start, end in _spans(window, whole_days):
        tool_rows = table.c.tool != "" if tools else table.c.tool == ""
        grp = group(table, time).label("grp")
        rows = await connection.execute(
            _summed(grp, [table.c[name] for name in HOUR_MEASURES], group)
            .where(time >= start, time < end, tool_rows, *scope.where(table)))
        for key, *values in rows:
            if all(value is None for value in values):
                continue  # no rows: the sums of nothing
            sums = found.setdefault(key, dict.fromkeys(HOUR_MEASURES, 0))
            for name, value in zip(HOUR_MEASURES, values):
                sums[name] += value or 0
    return found


def _spans(window: Window, whole_days: bool) -> list[tuple[Table, Any, datetime, datetime]]:
    """Where a window's sums are kept: (table, its time column, start, end) for day rows over
    the whole days in the window and hour rows over the hours before and after them."""
    first = window.start if window.start == _midnight(window.start) else _midnight(window.start) + DAY
    last = _midnight(window.end)
    if not whole_days or first >= last:
        return [(metric_hours, metric_hours.c.hour, window.start, window.end)]
    spans = [(metric_days, metric_days.c.day, first, last)]
    if window.start < first:
        spans.insert(0, (metric_hours, metric_hours.c.hour, window.start, first))
    if last < window.end:
        spans.append((metric_hours, metric_hours.c.hour, last, window.end))
    return spans


def _midnight(time: datetime) -> datetime:
    return time.replace(hour=0, minute=0, second=0, microsecond=0)


def _summed(grp: Any, columns: list[Any], group: Grouping) -> Any:
    """SELECT grp, sum(column)...: grouped by grp, except for the whole window (one row, no sort)."""
    if group is _overall_group:
        return select(literal("").label("grp"), *(func.sum(column) for column in columns))
    return select(grp, *(func.sum(column) for column in columns)).group_by(grp)


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


async def _measure(connection: AsyncConnection, window: Window, scope: Scope, group: Grouping,
                   idle_before: datetime, tools: bool = False, whole_days: bool = True
                   ) -> dict[Any, tuple[Volumes, float | None, int]]:
    """(volumes, median cycle time, its samples) for the window, per group. Grouped by tool,
    only calls have groups (tasks have no one tool). Groups finer than a day (a series' steps)
    read hour rows only (`whole_days=False`)."""
    tasks = {} if tools else await _task_volumes(connection, window, scope, group, idle_before)
    sums = await _hour_volumes(connection, window, scope, group, tools, whole_days)
    medians = {} if tools else await _medians(connection, window, scope, group)
    return {grp: (_merge(tasks.get(grp), sums.get(grp)), *medians.get(grp, (None, 0)))
            for grp in set(tasks) | set(sums) | set(medians)}


def _shown(measured: tuple[Volumes, float | None, int] | None) -> dict[str, Any]:
    volumes, middle, samples = measured or (Volumes(), None, 0)
    return {"metrics": metrics_of(volumes, middle, samples), "volumes": volumes.as_dict()}


async def _overall(connection: AsyncConnection, window: Window, scope: Scope, idle_before: datetime,
                   groups: dict[str, tuple[Volumes, float | None, int]] | None = None) -> dict[str, Any]:
    """The whole window; from its groups' volumes when they partition it (any `by` but tool),
    so only the median is computed again."""
    if groups is None:
        return _shown((await _measure(connection, window, scope, by_dimension(None), idle_before)).get(""))
    total = Volumes()
    for volumes, _, _ in groups.values():
        total.add(volumes)
    middle, samples = (await _medians(connection, window, scope, by_dimension(None))).get("", (None, 0))
    return _shown((total, middle, samples))


async def summarise(connection: AsyncConnection, window: Window, scope: Scope, by: str | None,
                    idle_before: datetime) -> dict[str, Any]:
    """The summary contract of GET /api/v1/metrics/summary (docs/metrics.md)."""
    groups = None
    if by is not None:
        groups = await _measure(connection, window, scope, by_dimension(by), idle_before, tools=by == "tool")
    current = await _overall(connection, window, scope, idle_before, groups if by != "tool" else None)
    previous = await _overall(connection, window.previous, scope, idle_before)
    summary: dict[str, Any] = {"window": window.as_dict(), **current,
                               "previous": {"window": window.previous.as_dict(), **previous}}
    if groups is not None:
        ordered = sorted(groups.items(), key=lambda item: (-item[1][0].tasks, -item[1][0].spend_usd, str(item[0])))
        summary["by"] = by
        summary["groups"] = [{"key": {by: key if key != "" else None}, **_shown(value)}
                             for key, value in ordered[:MAX_GROUPS]]
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
    step_of = by_step(window.start, step, connection.dialect.name)
    measured = await _measure(connection, window, scope, step_of, idle_before, whole_days=False)
    points = []
    for index in range(math.ceil((window.end - window.start) / step)):
        start = window.start + index * step
        shown = _shown(measured.get(index))
        if metric in METRICS:
            value = shown["metrics"][metric]
        else:
            amount = shown["volumes"][metric]
            value = {"value": amount, "samples": amount}
        points.append({"start": _iso(start), "end": _iso(min(start + step, window.end)), **value})
    return points
