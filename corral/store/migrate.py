"""Schema migrations with Alembic, applied at start and by `corral db upgrade`. On PostgreSQL an
advisory lock lets several replicas start at once without racing each other."""

from __future__ import annotations

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
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
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
    if path is not None and path.exists():
        path.chmod(0o600)
