"""How fast the audit ledger appends and verifies.

Prints the machine, then:
- durable appends per second through AuditLog (group commit) with 1, 8, 64 and 256 concurrent
  writers, on SQLite (WAL, synchronous=FULL) and, when CORRAL_TEST_DATABASE_URL points at a
  PostgreSQL server, on PostgreSQL; side by side with the baseline of one transaction per
  record (what appending without group commit costs);
- verification: every leaf rebuilt from its stored record and checked, and the tree built, for
  1,000,000 records read straight from the database (`verify_database`), with one worker
  process per core, side by side with one process (the baseline).
Targets (issue 4): >= 10,000 durable appends/s on SQLite with concurrent writers; 1,000,000
records verified in <= 3 s. Bounded: fixed counts, temporary databases, then it stops.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from hashlib import sha256
from pathlib import Path

from machine import describe
from sqlalchemy import create_engine, make_url, text

from corral.audit.ledger import AuditLog, append_records, verify_database
from corral.audit.records import AuditRecord
from corral.store.database import Database
from corral.store.migrate import upgrade

APPENDS = 4000
VERIFY_RECORDS = 1_000_000 if "--quick" not in sys.argv else 100_000
VERIFY_RUNS = 3


def record(index: int) -> AuditRecord:
    return AuditRecord(actor=f"user{index % 50}@example.com", action="tool.call", resource=f"tracker/update_{index}",
                       decision="approve", outcome="ok", payload_sha256=sha256(str(index).encode()).hexdigest())


async def appends_per_second(url: str, writers: int, grouped: bool) -> float:
    database = Database(url)
    log = AuditLog(database)
    log.start()
    per_writer = APPENDS // writers

    async def writer(number: int) -> None:
        for index in range(per_writer):
            if grouped:
                await log.append(record(number * per_writer + index))
            else:
                async with database.transaction() as connection:
                    await append_records(connection, [record(number * per_writer + index)])

    started = time.perf_counter()
    await asyncio.gather(*(writer(n) for n in range(writers)))
    elapsed = time.perf_counter() - started
    await log.stop()
    await database.close()
    return per_writer * writers / elapsed


async def fill(url: str, count: int) -> None:
    database = Database(url)
    batch = 20_000
    for start in range(0, count, batch):
        async with database.transaction() as connection:
            await append_records(connection, [record(i) for i in range(start, min(count, start + batch))])
    await database.close()


def verify_from_database(url: str, workers: int) -> float:
    started = time.perf_counter()
    verification, _ = verify_database(url, workers)
    elapsed = time.perf_counter() - started
    assert verification.problem is None and verification.size == VERIFY_RECORDS, verification
    return elapsed


def postgres_url() -> str | None:
    base = os.environ.get("CORRAL_TEST_DATABASE_URL")
    if not base or not base.startswith("postgresql"):
        return None
    name = f"corral_bench_{uuid.uuid4().hex[:8]}"
    engine = create_engine(base, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return make_url(base).set(database=name).render_as_string(hide_password=False)


def drop_postgres(url: str) -> None:
    engine = create_engine(os.environ["CORRAL_TEST_DATABASE_URL"], isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
    engine.dispose()


def main() -> None:
    print(describe())
    with tempfile.TemporaryDirectory() as scratch:
        targets = [("SQLite", lambda n: f"sqlite:///{Path(scratch) / f'bench{n}.db'}")]
        if os.environ.get("CORRAL_TEST_DATABASE_URL"):
            targets.append(("PostgreSQL", lambda n: postgres_url()))
        print(f"\ndurable appends per second ({APPENDS} records each run):")
        run = 0
        for name, make in targets:
            for writers in (1, 8, 64, 256):
                results = []
                for grouped in (True, False):
                    run += 1
                    url = make(run)
                    upgrade(url)
                    results.append(asyncio.run(appends_per_second(url, writers, grouped)))
                    if name == "PostgreSQL":
                        drop_postgres(url)
                print(f"  {name:10} {writers:2} writers: group commit {results[0]:>9,.0f}/s   "
                      f"one transaction per record (baseline) {results[1]:>7,.0f}/s   ({results[0] / results[1]:.1f}x)")
        print(f"\nverifying {VERIFY_RECORDS:,} records straight from the database (verify_database, what "
              f"`corral audit verify --database` runs), median of {VERIFY_RUNS}:")
        for name, make in targets:
            url = make("verify")
            upgrade(url)
            asyncio.run(fill(url, VERIFY_RECORDS))
            cores = os.cpu_count() or 1
            parallel = statistics.median(verify_from_database(url, cores) for _ in range(VERIFY_RUNS))
            single = statistics.median(verify_from_database(url, 1) for _ in range(VERIFY_RUNS))
            print(f"  {name:10} {cores} processes {parallel:5.2f} s ({VERIFY_RECORDS / parallel:>9,.0f} records/s)   "
                  f"one process (baseline) {single:5.2f} s   ({single / parallel:.1f}x)")
            if name == "PostgreSQL":
                drop_postgres(url)
    print("\ntargets: >= 10,000 durable appends/s on SQLite with concurrent writers; 1,000,000 records in <= 3 s")


if __name__ == "__main__":
    main()
