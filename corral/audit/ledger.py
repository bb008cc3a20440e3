"""Appending to the ledger and checking it. The one way anything writes `audit_records`.

`append_records` writes inside the caller's transaction (a control-plane change and its record
commit together). It takes positions by locking the single `audit_head` row, so appenders on
any number of replicas get consecutive sequence numbers with no gaps and no duplicates.
`AuditLog.append` is for the data path: concurrent callers are batched into one transaction
(group commit, one fsync for many records), and each caller returns only once its record is
durable. `record_change` is how control-plane changes are recorded: event and audit record together.
`verify_database` recomputes every leaf and the tree from what is stored.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from functools import lru_cache

from sqlalchemy import create_engine, select, update
from sqlalchemy.pool import NullPool
from sqlalchemy.ext.asyncio import AsyncConnection

from corral.audit.merkle import MerkleTree, levels_of
from corral.audit.records import AuditRecord, StoredRow, checked_leaf_hashes, payload_sha256
from corral.events.model import Event
from corral.events.recorder import record_event
from corral.store.database import Database, sync_url
from corral.store.tables import audit_head, audit_records

log = logging.getLogger("corral.audit")
APPEND_TIMEOUT_S = 30.0
READ_BATCH = 10_000


async def append_records(connection: AsyncConnection, records: Sequence[AuditRecord]) -> list[AuditRecord]:
    """Append `records` in the caller's transaction; return them with their sequence numbers."""
    if not records:
        return []
    size = (await connection.execute(
        select(audit_head.c.size).where(audit_head.c.id == 1).with_for_update())).scalar_one()
    placed = [_at(record, size + index) for index, record in enumerate(records)]
    await connection.exec_driver_sql(_insert_sql(connection.dialect.paramstyle), [_row(record) for record in placed])
    await connection.execute(update(audit_head).where(audit_head.c.id == 1).values(size=size + len(placed)))
    return placed


async def record_change(connection: AsyncConnection, event: Event) -> AuditRecord:
    """Record a control-plane change: its event, and its audit record, in the caller's
    transaction, so the change, the event and the record commit together or not at all. The
    record keeps the SHA-256 of the event's attributes (the payload), not the attributes."""
    await record_event(connection, event)
    record = AuditRecord(actor=event.user_email or "corral", action=event.action or event.kind,
                         resource=event.resource or "", decision=event.decision, outcome=event.outcome,
                         payload_sha256=payload_sha256(event.attributes))
    return (await append_records(connection, [record]))[0]


def _at(record: AuditRecord, seq: int) -> AuditRecord:
    """The record at its position (a copy: records are values), without validating it again."""
    placed = object.__new__(AuditRecord)
    placed.__dict__.update(record.__dict__, seq=seq)
    return placed


_COLUMNS = ("seq", "time", "actor", "action", "resource", "decision", "outcome", "payload_sha256", "leaf_hash")
assert _COLUMNS == tuple(audit_records.c.keys())


@lru_cache(maxsize=4)
def _insert_sql(paramstyle: str) -> str:
    """The INSERT handed straight to the driver's executemany: on the append path SQLAlchemy's
    statement compilation cost more than the database's own work."""
    mark = "?" if paramstyle == "qmark" else "%s"
    return f"INSERT INTO audit_records ({', '.join(_COLUMNS)}) VALUES ({', '.join([mark] * len(_COLUMNS))})"


def _row(record: AuditRecord) -> tuple[object, ...]:
    return (record.seq, record.time, record.actor, record.action, record.resource, record.decision, record.outcome,
            record.payload_sha256, record.leaf_hash().hex())


class AuditLog:
    """Durable appends with group commit: callers wait until their record is committed."""

    def __init__(self, database: Database, batch_size: int = 1000) -> None:
        self._database = database
        self._batch_size = batch_size
        self._queue: asyncio.Queue[tuple[AuditRecord, asyncio.Future[AuditRecord]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="corral-audit-log")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        pending = []
        while not self._queue.empty():  # nothing acknowledged is lost: the callers are told
            pending.append(self._queue.get_nowait())
        _fail(pending, RuntimeError("the audit log stopped before this record was written"))

    async def append(self, record: AuditRecord) -> AuditRecord:
        """Append one record; return it with its sequence number once it is durable."""
        waiting: asyncio.Future[AuditRecord] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((record, waiting))
        return await waiting  # bounded: the writer settles every future within APPEND_TIMEOUT_S of taking it

    async def _run(self) -> None:
        batch: list[tuple[AuditRecord, asyncio.Future[AuditRecord]]] = []
        try:
            while True:
                batch = [await self._queue.get()]
                await asyncio.sleep(0)  # writers woken by the last commit queue up now and share this one
                while len(batch) < self._batch_size and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                try:
                    async with asyncio.timeout(APPEND_TIMEOUT_S), self._database.transaction() as connection:
                        placed = await append_records(connection, [record for record, _ in batch])
                except Exception as error:  # every caller in the batch hears of it; nothing is half-written
                    log.exception("appending %d audit records failed", len(batch))
                    _fail(batch, error)
                    continue
                for (_, waiting), record in zip(batch, placed):
                    if not waiting.done():
                        waiting.set_result(record)
        finally:  # stopped: whoever still waits on this batch is told
            _fail(batch, RuntimeError("the audit log stopped while this record was being written"))


def _fail(batch: list[tuple[AuditRecord, asyncio.Future[AuditRecord]]], error: BaseException) -> None:
    for _, waiting in batch:
        if not waiting.done():
            waiting.set_exception(error)


async def stored_records(connection: AsyncConnection, start: int = 0) -> AsyncIterator[list[StoredRow]]:
    """The stored rows from `start` on, in sequence order, a batch at a time, as plain tuples."""
    position = start
    while True:
        rows = [tuple(row) for row in await connection.execute(
            select(audit_records).where(audit_records.c.seq >= position).order_by(audit_records.c.seq)
            .limit(READ_BATCH))]
        if not rows:
            return
        yield rows
        position = rows[-1][0] + 1


@dataclass(frozen=True)
class Verification:
    size: int
    root: bytes
    problem: str | None = None  # the first thing wrong, naming the record
    bad_seq: int | None = None


def verify_database(url: str, workers: int | None = None) -> tuple[Verification, MerkleTree]:
    """Check the whole stored ledger straight from the database: rebuild every leaf from its
    record, compare it with the stored leaf hash, build the tree; stop at the first record that
    is missing, out of place or changed. Blocking (run it in a command or a thread).

    A large ledger is split into ranges checked in parallel processes: each reads its range with
    the synchronous driver and builds the lower levels of its part of the tree (ranges start at
    multiples of a power of two, so the parts join into the whole tree's levels)."""
    url = sync_url(url)
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            head = connection.execute(select(audit_head.c.size).where(audit_head.c.id == 1)).scalar_one()
    finally:
        engine.dispose()
    workers = max(1, min(workers or os.cpu_count() or 1, head // PARALLEL_FROM))
    height = min(16, max(0, (head // workers).bit_length() - 1))
    bounds = sorted({0, head, *((head * part // workers) >> height << height for part in range(1, workers))})
    ranges = [(url, start, end, height) for start, end in zip(bounds, bounds[1:])]
    if len(ranges) <= 1:
        parts = [_check_range(url, 0, head, height)]
    else:
        with ProcessPoolExecutor(len(ranges), mp_context=get_context("fork")) as pool:
            parts = list(pool.map(_check_range, *zip(*ranges)))
    levels: list[list[bytes]] = [[] for _ in range(height + 1)]
    problem = None
    for part_levels, problem in parts:
        for level, part in zip(levels, part_levels):
            level.append(part)
        if problem is not None:
            break
    tree = MerkleTree.from_levels([b"".join(level) for level in levels])
    if problem is not None:
        return Verification(tree.size, tree.root(), problem[0], problem[1]), tree
    return Verification(tree.size, tree.root()), tree


PARALLEL_FROM = 100_000  # records per worker process at least: fewer are not worth starting one for


def _check_range(url: str, start: int, end: int, height: int) -> tuple[list[bytes], tuple[str, int] | None]:
    """Check records [start, end): the levels 0..height of their part of the tree (as far as the
    records are sound), and the first problem if any."""
    engine = create_engine(url, poolclass=NullPool)
    connection = engine.raw_connection()  # the driver's own rows: a third of the cost of SQLAlchemy's
    leaves: list[bytes] = []
    problem = None
    try:
        cursor = connection.cursor()
        for low in range(start, end, READ_BATCH):
            high = min(end, low + READ_BATCH)
            cursor.execute(f"SELECT {', '.join(_COLUMNS)} FROM audit_records "  # noqa: S608 - ints we computed
                           f"WHERE seq >= {int(low)} AND seq < {int(high)} ORDER BY seq")
            problem = checked_leaf_hashes(cursor.fetchall(), low, leaves)
            if problem is None and len(leaves) < high - start:
                problem = (f"record {start + len(leaves)} is missing", start + len(leaves))
            if problem is not None:
                break
    finally:
        connection.close()
        engine.dispose()
    return levels_of(b"".join(leaves), height), problem
