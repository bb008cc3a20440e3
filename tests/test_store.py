"""Storage: migrations match the tables, SQLite runs in WAL mode, times stay in UTC, and
batched events all arrive."""

import asyncio
from datetime import datetime, timedelta, timezone

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, func, select, text

from corral.events.model import Event
from corral.events.recorder import EventRecorder
from corral.store.database import Database, sync_url
from corral.store.migrate import upgrade
from corral.store.tables import events, metadata


def test_the_migrations_build_exactly_the_tables(fresh_database):
    upgrade(fresh_database)
    engine = create_engine(sync_url(fresh_database))
    try:
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), metadata)
    finally:
        engine.dispose()
    assert differences == []


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path):
    url = f"sqlite:///{tmp_path / 'corral.db'}"
    upgrade(url)

    async def pragmas():
        database = Database(url)
        try:
            async with database.read() as connection:
                mode = (await connection.execute(text("PRAGMA journal_mode"))).scalar()
                keys = (await connection.execute(text("PRAGMA foreign_keys"))).scalar()
            return mode, keys
        finally:
            await database.close()

    assert asyncio.run(pragmas()) == ("wal", 1)


def test_batched_events_all_arrive_with_their_times_in_utc(fresh_database):
    upgrade(fresh_database)
    when = datetime(2026, 11, 26, 12, 0, tzinfo=timezone(timedelta(hours=2)))

    async def scenario():
        database = Database(fresh_database)
        recorder = EventRecorder(database, batch_size=64, flush_interval=0.01)
        recorder.start()
        try:
            async def emit(worker):
                for index in range(250):
                    recorder.emit(Event(kind="test.batched", task_id=f"w{worker}", tokens_in=index, time=when))
                    if index % 50 == 0:
                        await asyncio.sleep(0)

            await asyncio.gather(*(emit(worker) for worker in range(4)))
        finally:
            await recorder.stop()
        async with database.read() as connection:
            count = (await connection.execute(
                select(func.count()).select_from(events).where(events.c.kind == "test.batched"))).scalar()
            stored = (await connection.execute(select(events.c.time).where(events.c.kind == "test.batched"))).scalar()
        await database.close()
        return count, stored, recorder.dropped

    count, stored, dropped = asyncio.run(scenario())
    assert (count, dropped) == (1000, 0)
    assert stored == datetime(2026, 11, 26, 10, 0, tzinfo=timezone.utc)


def test_an_event_with_nul_characters_is_stored_and_spoils_no_batch(fresh_database):
    upgrade(fresh_database)

    async def scenario():
        database = Database(fresh_database)
        recorder = EventRecorder(database, flush_interval=0.01)
        recorder.start()
        recorder.emit(Event(kind="test.nul", resource="/a\x00b", attributes={"k\x00": ["v\x00"]}))
        recorder.emit(Event(kind="test.nul", resource="clean"))
        await recorder.stop()
        async with database.read() as connection:
            rows = list(await connection.execute(
                select(events.c.resource, events.c.attributes).where(events.c.kind == "test.nul").order_by(events.c.id)))
        await database.close()
        return rows

    rows = asyncio.run(scenario())
    assert [tuple(row) for row in rows] == [("/a\ufffdb", {"k\ufffd": ["v\ufffd"]}), ("clean", {})]
