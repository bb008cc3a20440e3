"""Schema migrations with Alembic, applied at start and by `corral db upgrade`. Several
processes may start at once: on PostgreSQL an advisory lock serialises them, on SQLite a lock
file beside the database does."""

from __future__ import annotations

import fcntl
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text

from corral.store.database import sqlite_path, sync_url

_MIGRATIONS = Path(__file__).parent / "migrations"
_LOCK_ID = 0x636F7272  # "corr"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    return config


def upgrade(url: str) -> None:
    """Bring the database at `url` to the newest schema."""
    path = sqlite_path(url)
    if path is None:
        _upgrade(url)
        return
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(path.with_name(path.name + ".migrate-lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _upgrade(url)
    if path.exists():
        path.chmod(0o600)


def _upgrade(url: str) -> None:
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as connection:
            postgres = connection.dialect.name == "postgresql"
            if postgres:
                connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": _LOCK_ID})
                connection.commit()
            try:
                config = alembic_config()
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
                connection.commit()
            finally:
                if postgres:
                    connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": _LOCK_ID})
                    connection.commit()
    finally:
        engine.dispose()
