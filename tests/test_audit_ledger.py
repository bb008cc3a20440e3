"""The ledger's storage on each database: consecutive positions under concurrent appends,
append-only enforced by the database itself, and tampering found and named by verification."""

import asyncio

import pytest
from sqlalchemy import create_engine, text

from corral.audit import ledger
from corral.audit.ledger import AuditLog, append_records, verify_database
from corral.audit.merkle import root_of
from corral.audit.records import AuditRecord
from corral.store.database import Database, sync_url
from corral.store.migrate import upgrade
from tests.conftest import tamper_with_ledger


def record(index: int) -> AuditRecord:
    return AuditRecord(actor=f"user{index % 7}@example.com", action="command.exec", resource=f"make test {index}",
                       decision="allow", outcome="ok")


def run(url, scenario):
    async def wrapped():
        database = Database(url)
        try:
            return await scenario(database)
        finally:
            await database.close()
    return asyncio.run(wrapped())


def test_concurrent_writers_get_consecutive_positions_and_the_ledger_verifies(fresh_database):
    upgrade(fresh_database)

    async def scenario(database):
        log = AuditLog(database)
        log.start()
        try:
            async def writer(number):
                return [await log.append(record(number * 1000 + i)) for i in range(40)]
            placed = [r for batch in await asyncio.gather(*(writer(n) for n in range(8))) for r in batch]
            async with database.transaction() as connection:  # and one in a caller's own transaction
                placed += await append_records(connection, [record(9000), record(9001)])
        finally:
            await log.stop()
        return placed

    placed = run(fresh_database, scenario)
    verification, tree = verify_database(fresh_database)
    assert sorted(r.seq for r in placed) == list(range(322))
    assert verification.problem is None and verification.size == 322
    by_seq = sorted(placed, key=lambda r: r.seq)
    assert verification.root == root_of([r.leaf_hash() for r in by_seq])


@pytest.mark.parametrize("statement", ["UPDATE audit_records SET outcome = 'ok' WHERE seq = 0",
                                       "DELETE FROM audit_records WHERE seq = 0",
                                       "UPDATE audit_checkpoints SET root = 'x'",
                                       "DELETE FROM audit_checkpoints"])
def test_the_database_refuses_to_change_or_delete_ledger_rows(fresh_database, statement):
    upgrade(fresh_database)

    async def scenario(database):
        async with database.transaction() as connection:
            await append_records(connection, [record(0)])
            await connection.execute(text(
                "INSERT INTO audit_checkpoints (size, root, note, created_at) VALUES (1, 'r', 'n', CURRENT_TIMESTAMP)"))

    run(fresh_database, scenario)
    engine = create_engine(sync_url(fresh_database))
    try:
        with pytest.raises(Exception, match="append-only"):
            with engine.begin() as connection:
                connection.execute(text(statement))
    finally:
        engine.dispose()


def test_a_record_changed_behind_corrals_back_is_named_by_verification(fresh_database):
    upgrade(fresh_database)

    async def scenario(database):
        async with database.transaction() as connection:
            await append_records(connection, [record(i) for i in range(50)])

    run(fresh_database, scenario)
    tamper_with_ledger(fresh_database, "UPDATE audit_records SET resource = 'make harmless' WHERE seq = 37")

    verification, tree = verify_database(fresh_database)
    assert verification.bad_seq == 37 and "record 37" in verification.problem
    assert tree.size == 37  # the records before it still verify


@pytest.mark.parametrize("workers", [1, 2])
def test_verification_in_parallel_ranges_finds_the_same_records_and_problems(fresh_database, monkeypatch, workers):
    """Large ledgers are checked in ranges by worker processes; with ranges forced small here,
    a change in the second range is named, and an honest ledger gives the root of its records."""
    upgrade(fresh_database)
    records = [record(i) for i in range(300)]

    async def scenario(database):
        async with database.transaction() as connection:
            return await append_records(connection, records)

    placed = run(fresh_database, scenario)
    monkeypatch.setattr(ledger, "PARALLEL_FROM", 100)
    verification, tree = verify_database(fresh_database, workers=workers)
    assert verification.problem is None and verification.size == 300
    assert verification.root == root_of([r.leaf_hash() for r in placed])
    tamper_with_ledger(fresh_database, "DELETE FROM audit_records WHERE seq = 250")
    verification, tree = verify_database(fresh_database, workers=workers)
    assert verification.problem == "record 250 is missing" and tree.size == 250
