"""The rollup: folds new events, in id order, into `metric_tasks` (one row per task),
`metric_hours` and `metric_days` (sums per hour, per day, and dimension), and remembers the last
event folded. Rollups are derived data: `rebuild` throws them away and folds every event again.

Only this module writes the rollup tables. One replica folds at a time (a PostgreSQL advisory
lock; SQLite's write lock). On PostgreSQL an event id can become visible after a later one (two
transactions committing out of order), so folding stops before a gap in the ids until every
transaction that was running when the gap was first seen has ended (then a missing id was a
rolled-back insert and never comes), or at the latest after GAP_WAIT_S."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from sqlalchemy import delete, func, select, text, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from corral.metrics.fold import (
    DIMENSIONS, MEASURES, HourDeltas, TaskState, fold_lifecycle, fold_measures, is_measured, new_task, rank_of,
    task_key,
)
from corral.store.database import Database
from corral.store.tables import events, metric_days, metric_hours, metric_progress, metric_tasks

log = logging.getLogger("corral.metrics")
BATCH = 10_000
GAP_WAIT_S = 300.0
REBUILD_PATIENCE_S = 60.0  # a rebuild that folds nothing for this long returns (the sweeper goes on)
LOCK_ID = 0x636F726D  # "corm"
_COLUMNS = (events.c.id, events.c.time, events.c.kind, events.c.user_email, events.c.team, events.c.client,
            events.c.task_id, events.c.mode, events.c.resource, events.c.outcome, events.c.tokens_in,
            events.c.tokens_out, events.c.cost_usd, events.c.attributes, events.c.source)


class Rollup:
    """Folds events into the rollup tables; `catch_up` is safe to call from anywhere, any time."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self._gaps: dict[int, tuple[float, int]] = {}  # first missing id -> (seen at, transactions begun before)
        self._lock = asyncio.Lock()

    async def catch_up(self, budget_s: float = 30.0) -> int:
        """Fold what is new, for at most about `budget_s` (waiting for another fold of this
        process counts against it); return how many events were folded."""
        deadline = time.monotonic() + budget_s
        try:
            async with asyncio.timeout(budget_s):
                await self._lock.acquire()
        except TimeoutError:
            return 0
        folded = 0
        try:
            while time.monotonic() < deadline:
                done = await self._fold_batch()
                if done is None:
                    break
                folded += done
        finally:
            self._lock.release()
        return folded

    async def rebuild(self) -> int:
        """Empty the rollups and fold every event again, a batch at a time (queries meanwhile
        read what has been folded so far)."""
        async with self._lock:
            async with self._database.transaction() as connection:
                for table in (metric_hours, metric_days, metric_tasks, metric_progress):
                    await connection.execute(delete(table))
            self._gaps.clear()
        folded, idle_since = 0, time.monotonic()
        while time.monotonic() - idle_since < REBUILD_PATIENCE_S:
            done = await self.catch_up(budget_s=1.0)
            folded += done
            if done:
                idle_since = time.monotonic()
                continue
            async with self._database.read() as connection:
                done_id, newest = await folded_up_to(connection)
            if done_id >= newest:
                break
            await asyncio.sleep(0.2)  # another fold holds the lock, or a gap in ids is settling
        return folded

    async def _fold_batch(self) -> int | None:
        """Fold one batch; None when there was nothing (or another replica is folding)."""
        async with self._database.transaction() as connection:
            if connection.dialect.name == "postgresql":
                locked = await connection.scalar(text("SELECT pg_try_advisory_xact_lock(:id)"), {"id": LOCK_ID})
                if not locked:
                    return None
            done = await connection.scalar(select(metric_progress.c.event_id).where(metric_progress.c.id == 1))
            if done is None:
                await connection.execute(metric_progress.insert().values(id=1, event_id=0))
                done = 0
            rows = list((await connection.execute(
                select(*_COLUMNS).where(events.c.id > done).order_by(events.c.id).limit(BATCH))).mappings())
            if connection.dialect.name == "postgresql":
                running = (await connection.execute(text(
                    "SELECT pg_snapshot_xmin(s)::text, pg_snapshot_xmax(s)::text FROM pg_current_snapshot() s"))).one()
                rows = self._up_to_gap(rows, done, oldest_running=int(running[0]), next_transaction=int(running[1]))
            # On SQLite writers take turns and ids grow with each commit: a gap is final.
            if not rows:
                return None
            await _fold(connection, rows)
            await connection.execute(metric_progress.update().where(metric_progress.c.id == 1)
                                     .values(event_id=rows[-1]["id"]))
            return len(rows)

    def _up_to_gap(self, rows: list[Any], done: int, oldest_running: int, next_transaction: int
                   ) -> list[Any]:
        """The rows before the first gap in ids that may still fill: a gap first seen while
        transactions below `next_transaction` were running is final once none of them runs
        (`oldest_running` has passed it)."""
        expected = done + 1
        for index, row in enumerate(rows):
            if row["id"] != expected:
                seen_at, waiting_for = self._gaps.setdefault(expected, (time.monotonic(), next_transaction))
                if oldest_running < waiting_for and time.monotonic() - seen_at < GAP_WAIT_S:
                    return rows[:index]
                self._gaps.pop(expected, None)
            expected = row["id"] + 1
        return rows


async def _fold(connection: AsyncConnection, rows: list[Any]) -> None:
    keys = {key for row in rows if (key := task_key(row)) is not None}
    tasks = await _load_tasks(connection, keys)
    deltas = HourDeltas()
    for row in rows:
        key = task_key(row)
        task = None
        if key is not None:
            task = tasks.get(key)
            if task is None:
                task = tasks[key] = new_task(row)
            fold_lifecycle(task, row)
        if task is not None and is_measured(row):
            rank = rank_of(row["source"])
            if rank < task.rank:
                continue  # a better source already counts this task's measures
            if rank > task.rank:
                if task.rank:
                    await _uncount(connection, task, row["id"], deltas)
                task.rank = rank
            fold_measures(task, row, +1)
        deltas.add(row, task)
    await _write_tasks(connection, list(tasks.values()))
    await _write_hours(connection, deltas)


async def _uncount(connection: AsyncConnection, task: TaskState, before_id: int, deltas: HourDeltas) -> None:
    """A better source started reporting this task: take back what the previous one counted."""
    user = events.c.user_email == task.user_email if task.user_email else events.c.user_email.is_(None)
    found = await connection.execute(select(*_COLUMNS).where(events.c.task_id == task.task_id, user,
                                                             events.c.id < before_id))
    for row in found.mappings():
        if is_measured(row) and rank_of(row["source"]) == task.rank:
            fold_measures(task, row, -1)
            deltas.add(row, task, sign=-1)


async def _load_tasks(connection: AsyncConnection, keys: set[tuple[str, str]]) -> dict[tuple[str, str], TaskState]:
    found: dict[tuple[str, str], TaskState] = {}
    ordered = sorted(keys)
    for start in range(0, len(ordered), 500):
        chunk = ordered[start:start + 500]
        rows = await connection.execute(select(metric_tasks).where(
            tuple_(metric_tasks.c.user_email, metric_tasks.c.task_id).in_(chunk)))
        for row in rows:
            values = dict(row._mapping)
            values.pop("cycle_s")
            found[(row.user_email, row.task_id)] = TaskState(**values)
    return found


def _insert(connection: AsyncConnection, table: Any) -> Any:
    return (sqlite if connection.dialect.name == "sqlite" else postgresql).insert(table)


async def _write_tasks(connection: AsyncConnection, tasks: list[TaskState]) -> None:
    if not tasks:
        return
    statement = _insert(connection, metric_tasks)
    updated = {column.name: statement.excluded[column.name] for column in metric_tasks.columns
               if column.name not in ("user_email", "task_id")}
    await connection.execute(statement.on_conflict_do_update(index_elements=["user_email", "task_id"], set_=updated),
                             [task.row() for task in tasks])


async def _write_hours(connection: AsyncConnection, deltas: HourDeltas) -> None:
    """Add the deltas to their hour rows and to their day rows."""
    if not deltas.rows:
        return
    days: dict[tuple[Any, ...], dict[str, float]] = {}
    for (hour, *dimensions), measures in deltas.rows.items():
        day = days.setdefault((hour.replace(hour=0), *dimensions), dict.fromkeys(MEASURES, 0))
        for name, value in measures.items():
            day[name] += value
    for table, grain, sums in ((metric_hours, "hour", deltas.rows), (metric_days, "day", days)):
        statement = _insert(connection, table)
        added = {name: table.c[name] + statement.excluded[name] for name in MEASURES}
        rows = [{grain: key[0], **dict(zip(DIMENSIONS, key[1:])), **measures} for key, measures in sums.items()]
        await connection.execute(statement.on_conflict_do_update(index_elements=[grain, *DIMENSIONS], set_=added),
                                 rows)


async def folded_up_to(connection: AsyncConnection) -> tuple[int, int]:
    """(the last event folded, the newest event): how far behind the rollup is."""
    done = await connection.scalar(select(metric_progress.c.event_id).where(metric_progress.c.id == 1))
    newest = await connection.scalar(select(func.max(events.c.id)))
    return done or 0, newest or 0
