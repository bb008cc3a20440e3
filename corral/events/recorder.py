"""Recording events: the one way anything in Corral writes to the `events` table.

`record_event` writes inside the caller's transaction, so a control-plane change and its event
commit together or not at all. `EventRecorder.emit` queues telemetry events and writes them in
batches off the request path; a full queue drops (and counts) rather than slowing requests.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from corral.events.model import Event
from corral.store.database import Database
from corral.store.tables import events

log = logging.getLogger("corral.events")


async def record_event(connection: AsyncConnection, event: Event) -> None:
    """Write `event` in the caller's transaction."""
    await connection.execute(insert(events), [event.row()])


_STOP = object()  # put on the queue by stop(): write what came before it, then end


class EventRecorder:
    """Batches telemetry events: up to `batch_size` rows per insert, at least every
    `flush_interval` seconds while events arrive. `stop()` writes everything queued before it."""

    def __init__(
        self,
        database: Database,
        *,
        max_queue: int = 50_000,
        batch_size: int = 500,
        flush_interval: float = 0.2,
        observer: Callable[[Event], None] | None = None,
    ) -> None:
        self._database = database
        self._observer = observer  # sees every event emitted (the Prometheus counters)
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._max_queue = max_queue
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        self.written = 0

    def emit(self, event: Event) -> None:
        if self._observer is not None:
            self._observer(event)
        if self._queue.qsize() >= self._max_queue:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("event queue full; %d events dropped so far", self.dropped)
            return
        self._queue.put_nowait(event)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="corral-event-recorder")

    async def stop(self, timeout: float = 10.0) -> None:
        if self._task is None:
            return
        self._queue.put_nowait(_STOP)
        try:
            await asyncio.wait_for(self._task, timeout)
        except TimeoutError:
            log.error("gave up writing %d queued events at shutdown", self._queue.qsize())
        self._task = None

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            if first is _STOP:
                return
            if self._queue.qsize() < self._batch_size - 1:
                await asyncio.sleep(self._flush_interval)  # let a batch gather
            batch, stopping = [first], False
            while len(batch) < self._batch_size and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
            await self._write_or_drop(batch)
            if stopping:
                return

    async def _insert(self, batch: list[object]) -> None:
        async with self._database.transaction() as connection:
            await connection.execute(insert(events), [event.row() for event in batch])  # type: ignore[attr-defined]
        self.written += len(batch)

    async def _write_or_drop(self, batch: list[object]) -> None:
        """Write the batch; if it fails twice, write its events one by one, so that one event
        the database refuses costs only itself."""
        for attempt in (1, 2):
            try:
                await self._insert(batch)
                return
            except Exception:  # the database may be briefly away; keep the loop alive
                log.exception("could not write %d events (attempt %d)", len(batch), attempt)
                await asyncio.sleep(0.5)
        for event in batch:
            try:
                await self._insert([event])
            except Exception:
                self.dropped += 1
                log.exception("dropped an event of kind %s", getattr(event, "kind", "?"))
