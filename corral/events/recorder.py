"""Recording events: the one way anything in Corral writes to the `events` table.

`record_event` writes inside the caller's transaction, so a control-plane change and its event
commit together or not at all. `EventRecorder.emit` queues telemetry events and writes them in
batches off the request path; a full queue drops (and counts) rather than slowing requests.
"""

from __future__ import annotations

import asyncio
import logging
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from corral.events.model import Event
from corral.store.database import Database
from corral.store.tables import events

log = logging.getLogger("corral.events")


async def record_event(connection: AsyncConnection, event: Event) -> None:
    """Write `event` in the caller's transaction."""
    await connection.execute(insert(events), [event.row()])


class EventRecorder:
    """Batches telemetry events: up to `batch_size` rows per insert, at least every
    `flush_interval` seconds while events arrive."""

    def __init__(
        self,
        database: Database,
        *,
        max_queue: int = 50_000,
        batch_size: int = 500,
        flush_interval: float = 0.2,
    ) -> None:
        self._database = database
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=max_queue)
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        self.written = 0

    def emit(self, event: Event) -> None:
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("event queue full; %d events dropped so far", self.dropped)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="corral-event-recorder")

    async def flush(self) -> None:
        """Write everything queued so far."""
        while not self._queue.empty():
            await self._write(self._take(self._queue.qsize()))

    async def stop(self, timeout: float = 10.0) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        try:
            async with asyncio.timeout(timeout):
                await self.flush()
        except TimeoutError:
            log.error("gave up flushing %d events at shutdown", self._queue.qsize())

    def _take(self, limit: int) -> list[Event]:
        batch = []
        while len(batch) < limit and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        return batch

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            await asyncio.sleep(self._flush_interval)  # let a batch gather
            batch = [first, *self._take(self._batch_size - 1)]
            try:
                await self._write(batch)
            except Exception:  # the database may be briefly away; keep the loop alive
                log.exception("could not write %d events; retrying once", len(batch))
                await asyncio.sleep(1.0)
                try:
                    await self._write(batch)
                except Exception:
                    self.dropped += len(batch)
                    log.exception("dropped %d events", len(batch))

    async def _write(self, batch: list[Event]) -> None:
        if not batch:
            return
        async with self._database.transaction() as connection:
            await connection.execute(insert(events), [event.row() for event in batch])
        self.written += len(batch)
