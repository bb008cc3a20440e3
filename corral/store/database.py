"""The one database access layer: an async engine for SQLite or PostgreSQL, with SQLite set up
for safe concurrent use (WAL, full sync, foreign keys, writes that take the lock up front).

It owns connections and transactions; it must never know what the tables mean.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from corral.errors import ConfigError, Unavailable

SQLITE_BUSY_TIMEOUT_MS = 10_000
READY_TIMEOUT_S = 2.0
STARTUP_LOCK_ID = 0x636F7273  # "cors"


def sync_url(url: str) -> str:
    """The driver URL for synchronous use (migrations)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return parsed.set(drivername="sqlite").render_as_string(hide_password=False)
    if parsed.get_backend_name() == "postgresql":
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    raise ConfigError(f"CORRAL_DATABASE_URL: unsupported database {parsed.get_backend_name()!r}")


def async_url(url: str) -> str:
    parsed = make_url(sync_url(url))
    if parsed.get_backend_name() == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    return parsed.render_as_string(hide_password=False)


def sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def _configure_sqlite(engine: AsyncEngine, *, immediate: bool) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, issue BEGIN, so writers can take the lock up front.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        # A deferred transaction that later writes can fail at once with "database is locked";
        # BEGIN IMMEDIATE waits (busy_timeout) for the write lock instead.
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class Database:
    """Writes go through `transaction()`, reads through `read()`. On PostgreSQL both share one
    pool; on SQLite writes use their own so that readers never queue behind the write lock."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.dialect = make_url(url).get_backend_name()
        path = sqlite_path(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.dialect == "sqlite":
            self._writer = create_async_engine(async_url(url), pool_size=1, max_overflow=0, pool_timeout=30)
            self._reader = create_async_engine(async_url(url), pool_size=4, max_overflow=4)
            _configure_sqlite(self._writer, immediate=True)
            _configure_sqlite(self._reader, immediate=False)
        else:
            self._writer = create_async_engine(
                async_url(url), pool_size=10, max_overflow=10, pool_timeout=30, pool_pre_ping=True
            )
            self._reader = self._writer

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A read-write transaction, committed when the block ends without an error."""
        async with self._writer.begin() as connection:
            yield connection

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self._reader.connect() as connection:
            yield connection

    async def lock_for_startup(self, connection: AsyncConnection) -> None:
        """Serialise start-up work (the first admin, demo data) between replicas starting at
        once; held until the transaction ends. SQLite's write lock already does this."""
        if self.dialect == "postgresql":
            await connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": STARTUP_LOCK_ID})

    async def ping(self) -> None:
        """Raise Unavailable unless the database answers within READY_TIMEOUT_S."""
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                async with self.read() as connection:
                    await connection.execute(text("SELECT 1"))
        except Exception as error:  # any driver error means "not ready"
            raise Unavailable(f"database not reachable: {type(error).__name__}") from None

    async def close(self) -> None:
        await self._writer.dispose()
        if self._reader is not self._writer:
            await self._reader.dispose()
