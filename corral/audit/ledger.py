"""Appending to the ledger and checking it. The one way anything writes `audit_records`.

`append_records` writes inside the caller's transaction (a control-plane change and its record
commit together). It takes positions by locking the single `audit_head` row, so appenders on
any number of replicas get consecutive sequence numbers with no gaps and no duplicates.
`AuditLog.append` is for the data path: concurrent callers are batched into one transaction
(group commit, one fsync for many records), and each caller returns only once its record is
durable. `record_change` is how control-plane changes are recorded: event and audit record together.
`verify_records` recomputes every leaf and the tree from what is stored.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from hashlib import sha256

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from corral.audit.merkle import MerkleTree, leaf_hash
from corral.audit.records import AuditRecord, canonical_leaf
from corral.events.model import Event
from corral.events.recorder import record_event
from corral.store.database import Database
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
    await connection.execute(insert(audit_records), [_row(record) for record in placed])
    await connection.execute(update(audit_head).where(audit_head.c.id == 1).values(size=size + len(placed)))
    return placed


async def record_change(connection: AsyncConnection, event: Event) -> AuditRecord:
    """Record a control-plane change: its event, and its audit record, in the caller's
    transaction, so the change, the event and the record commit together or not at all. The
    record keeps the SHA-256 of the event's attributes (the payload), not the attributes."""
    await record_event(connection, event)
    payload = json.dumps(event.attributes, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    record = AuditRecord(actor=event.user_email or "corral", action=event.action or event.kind,
                         resource=event.resource or "", decision=event.decision, outcome=event.outcome,
                         payload_sha256=sha256(payload.encode("utf-8", "surrogatepass")).hexdigest())
    return (await append_records(connection, [record]))[0]


def _at(record: AuditRecord, seq: int) -> AuditRecord:
    """The record at its position (a copy: records are values), without validating it again."""
    placed = copy.copy(record)
    object.__setattr__(placed, "seq", seq)
    return placed


def _row(record: AuditRecord) -> dict[str, object]:
    return {"seq": record.seq, "time": record.time, "actor": record.actor, "action": record.action,
            "resource": record.resource, "decision": record.decision, "outcome": record.outcome,
            "payload_sha256": record.payload_sha256, "leaf_hash": record.leaf_hash().hex()}


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
        while not self._queue.empty():  # nothing acknowledged is lost: the callers are told
            _, waiting = self._queue.get_nowait()
            if not waiting.done():
                waiting.set_exception(RuntimeError("the audit log stopped before this record was written"))

    async def append(self, record: AuditRecord) -> AuditRecord:
        """Append one record; return it with its sequence number once it is durable."""
        waiting: asyncio.Future[AuditRecord] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((record, waiting))
        async with asyncio.timeout(APPEND_TIMEOUT_S):  # a caller that gives up cancels only its own wait
            return await waiting

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            await asyncio.sleep(0)  # writers woken by the last commit queue up now and share this one
            while len(batch) < self._batch_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                async with self._database.transaction() as connection:
                    placed = await append_records(connection, [record for record, _ in batch])
            except Exception as error:  # every caller in the batch hears of it; nothing is half-written
                log.exception("appending %d audit records failed", len(batch))
                for _, waiting in batch:
                    if not waiting.done():
                        waiting.set_exception(error)
                continue
            for (_, waiting), record in zip(batch, placed):
                if not waiting.done():
                    waiting.set_result(record)


async def stored_records(connection: AsyncConnection, start: int = 0) -> AsyncIterator[list[object]]:
    """The stored rows in sequence order, a batch at a time."""
    position = start
    while True:
        rows = list(await connection.execute(
            select(audit_records).where(audit_records.c.seq >= position).order_by(audit_records.c.seq)
            .limit(READ_BATCH)))
        if not rows:
            return
        yield rows
        position = rows[-1].seq + 1


@dataclass(frozen=True)
class Verification:
    size: int
    root: bytes
    problem: str | None = None  # the first thing wrong, naming the record
    bad_seq: int | None = None


async def verify_records(connection: AsyncConnection, progress=None) -> tuple[Verification, MerkleTree]:  # noqa: ANN001
    """Rebuild every leaf from its record and the tree from the leaves; stop at the first record
    that is missing, out of place, or whose stored leaf hash does not match its contents."""
    head = (await connection.execute(select(audit_head.c.size).where(audit_head.c.id == 1))).scalar_one()
    leaves: list[bytes] = []
    problem: tuple[str, int] | None = None
    async for rows in stored_records(connection):
        for seq, time, actor, action, resource, decision, outcome, payload, stored in rows:  # column order
            expected = len(leaves)
            if seq != expected:
                problem = (f"record {expected} is missing", expected)
                break
            computed = leaf_hash(canonical_leaf(seq, time, actor, action, resource, decision, outcome, payload))
            if computed != bytes.fromhex(stored):
                problem = (f"record {seq} does not match its leaf hash: its contents or its hash were changed", seq)
                break
            leaves.append(computed)
        if problem is not None:
            break
        if progress is not None:
            progress(len(leaves), head)
    tree = MerkleTree.from_leaves(leaves)
    if problem is None and tree.size != head:
        problem = (f"the ledger's head says {head} records, {tree.size} are stored", tree.size)
    if problem is not None:
        return Verification(tree.size, tree.root(), problem[0], problem[1]), tree
    return Verification(tree.size, tree.root()), tree


def row_leaf_hash(row: object) -> bytes:
    """A stored record's leaf hash, rebuilt from its fields (no object made: this is the hot path
    of verification)."""
    return leaf_hash(canonical_leaf(row.seq, row.time, row.actor, row.action, row.resource,  # type: ignore[attr-defined]
                                    row.decision, row.outcome, row.payload_sha256))  # type: ignore[attr-defined]
