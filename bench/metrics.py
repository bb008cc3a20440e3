"""The metrics summary at scale: generate N events (default 10 million) over 30 days for a few
hundred developers, fold them into the rollups with the real code, then time the summary (30
days, 7 days; overall and broken down) against the cheapest query over the raw events that gives
even part of the answer. Runs on SQLite and on PostgreSQL (when BENCH_PG_URL or the local server
answers). Target: the 30-day summary in <= 500 ms.

    python bench/metrics.py [--events 10000000] [--backend sqlite|postgresql|both] [--keep]
    python bench/metrics.py --database URL   # the queries again, on a database kept by --keep
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
from sqlalchemy import create_engine, func, select, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from corral.metrics.rollup import Rollup  # noqa: E402
from corral.metrics.summary import Scope, series, summarise, window_of  # noqa: E402
from corral.store.database import Database, sqlite_path, sync_url  # noqa: E402
from corral.store.migrate import upgrade  # noqa: E402
from corral.store.tables import events  # noqa: E402

_spec = importlib.util.spec_from_file_location("bench_machine", Path(__file__).with_name("machine.py"))
machine = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(machine)  # type: ignore[union-attr]

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
DAYS = 30
TEAMS = [f"team-{n:02d}" for n in range(12)]
USERS = [(f"dev{n:03d}@example.com", TEAMS[n % len(TEAMS)]) for n in range(300)]
CLIENTS = ["roo-code", "cline", "claude-code"]
MODES = ["code", "architect", "ask", "debug", "orchestrator"]
MODELS = [("anthropic", "claude-sonnet-4-5"), ("openai", "gpt-5"), ("openai", "gpt-5-mini"), ("google", "gemini-2.5-pro")]
TOOLS = ["read_file", "write_to_file", "apply_diff", "search_files", "list_files", "github/create_issue",
         "github/get_file_contents", "memory/read_graph"]
COMMANDS = ["npm test", "pytest -q", "git status", "git diff", "make", "ls -la", "cargo build", "go test ./..."]


def task_events(rng: random.Random, index: int) -> list[dict]:
    """One task's events: a start, ~12 requests, ~15 tool results, ~8 commands, sometimes a
    rollback, and an end (80% completed, 8% failed, the rest left open). Each developer keeps to
    one client and mostly one model, and works through the day."""
    number = rng.randrange(len(USERS))
    user, team = USERS[number]
    client = CLIENTS[number % len(CLIENTS)]
    provider, model = MODELS[number % len(MODELS)] if rng.random() < 0.8 else rng.choice(MODELS)
    mode = rng.choices(MODES, [50, 15, 15, 15, 5])[0]
    day = NOW - timedelta(days=rng.randrange(DAYS) + 1)
    start = day.replace(hour=0) + timedelta(hours=rng.uniform(7, 19) + (number % 10))  # ten time zones
    who = {"user_email": user, "team": team, "client": client, "task_id": f"task-{index}", "mode": mode,
           "source": None, "attributes": {}}
    found = [{**who, "kind": "task.started", "time": start}]
    elapsed = 0.0
    for _ in range(rng.randint(30, 44)):
        elapsed += rng.expovariate(1 / 40)
        when = start + timedelta(seconds=elapsed)
        roll = rng.random()
        if roll < 0.33:
            found.append({**who, "kind": "llm.request", "time": when, "outcome": "ok" if rng.random() > 0.02 else "error",
                          "tokens_in": rng.randint(2000, 40000), "tokens_out": rng.randint(50, 2000),
                          "cost_usd": round(rng.uniform(0.001, 0.08), 6), "resource": model,
                          "attributes": {"provider": provider, "model": model}})
        elif roll < 0.75:
            tool = rng.choice(TOOLS)
            server, _, name = tool.rpartition("/")
            found.append({**who, "kind": "tool.result", "time": when, "resource": tool,
                          "outcome": "ok" if rng.random() > 0.05 else "error",
                          "attributes": {"tool": name, **({"server": server} if server else {})}})
        elif roll < 0.99:
            outcome = rng.choices(["ok", "error", "timeout"], [0.85, 0.12, 0.03])[0]
            found.append({**who, "kind": "command.exec", "time": when, "resource": rng.choice(COMMANDS),
                          "outcome": outcome, "attributes": {"exit_code": 0 if outcome == "ok" else 1}})
        else:
            found.append({**who, "kind": "task.rolled_back", "time": when})
    end = start + timedelta(seconds=elapsed + 5)
    ending = rng.random()
    if ending < 0.80:
        found.append({**who, "kind": "task.completed", "time": end, "outcome": "ok"})
    elif ending < 0.88:
        found.append({**who, "kind": "task.failed", "time": end, "outcome": "error"})
    return found


COLUMNS = ("kind", "time", "user_email", "team", "client", "task_id", "mode", "resource", "outcome", "tokens_in",
           "tokens_out", "cost_usd", "attributes", "source")


def _rows(count: int):
    """`count` events as tuples in COLUMNS order (attributes as JSON text)."""
    rng, written, index = random.Random(7), 0, 0
    while written < count:
        for event in task_events(rng, index)[: count - written]:
            event["attributes"] = json.dumps(event["attributes"])
            yield tuple(event.get(name) for name in COLUMNS)
            written += 1
        index += 1


def generate(url: str, count: int) -> float:
    """Write `count` events with the database's own bulk path (sqlite3 executemany, PostgreSQL
    COPY), in the format Corral's tables use; seconds taken."""
    started = time.perf_counter()
    path = sqlite_path(url)
    if path is not None:
        connection = sqlite3.connect(path)
        placeholders = ", ".join("?" for _ in COLUMNS)
        statement = f"INSERT INTO events ({', '.join(COLUMNS)}) VALUES ({placeholders})"
        batch: list[tuple] = []
        for row in _rows(count):
            batch.append((*row[:1], row[1].strftime("%Y-%m-%d %H:%M:%S.%f"), *row[2:]))
            if len(batch) == 50_000:
                connection.executemany(statement, batch)
                batch = []
        connection.executemany(statement, batch)
        connection.commit()
        connection.close()
    else:
        with psycopg.connect(sync_url(url).replace("postgresql+psycopg", "postgresql")) as connection:
            with connection.cursor().copy(f"COPY events ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                for row in _rows(count):
                    copy.write_row(row)
    return time.perf_counter() - started


async def measure(url: str, count: int | None) -> None:
    """Generate `count` events and fold them (None: the database has them already, from an
    earlier `--keep` run), then time the queries."""
    upgrade(url)
    if count is not None:
        print(f"  generating {count:,} events over {DAYS} days ...")
        seconds = generate(url, count)
        print(f"  generated in {seconds:.0f} s ({count / seconds:,.0f} events/s)")
    database = Database(url)
    try:
        rollup = Rollup(database)
        started = time.perf_counter()
        folded = await rollup.catch_up(budget_s=float("inf"))
        seconds = time.perf_counter() - started
        if folded:
            print(f"  folded {folded:,} events into the rollups in {seconds:.0f} s ({folded / seconds:,.0f} events/s)")
        statistics_refreshed(url)
        async with database.read() as connection:
            tasks = await connection.scalar(text("SELECT COUNT(*) FROM metric_tasks"))
            hours = await connection.scalar(text("SELECT COUNT(*) FROM metric_hours"))
            days = await connection.scalar(text("SELECT COUNT(*) FROM metric_days"))
        print(f"  rollup rows: {tasks:,} tasks, {hours:,} hour rows, {days:,} day rows")
        idle_before = NOW - timedelta(minutes=30)

        async def summary(days: int, by: str | None):
            async with database.read() as connection:
                return await summarise(connection, window_of(NOW, timedelta(days=days), None, None), Scope(), by,
                                       idle_before)

        async def chart():
            async with database.read() as connection:
                return await series(connection, window_of(NOW, timedelta(days=7), None, None), Scope(),
                                    "task_success_rate", timedelta(days=1), idle_before)

        async def raw(days: int):
            """The cheapest answer straight from events: counts and spend by kind and outcome
            (no tasks, no median): what a summary without rollups has to scan at least."""
            async with database.read() as connection:
                return (await connection.execute(
                    select(events.c.kind, events.c.outcome, func.count(), func.sum(events.c.cost_usd))
                    .where(events.c.time >= NOW - timedelta(days=days)).group_by(events.c.kind, events.c.outcome)
                )).all()

        loop = asyncio.get_running_loop()
        print(f"  {'query':<38} {'median ms':>10}")
        for label, make in [("summary 30d", lambda: summary(30, None)), ("summary 30d by team", lambda: summary(30, "team")),
                            ("summary 30d by user", lambda: summary(30, "user")),
                            ("summary 30d by model", lambda: summary(30, "model")),
                            ("summary 30d by tool", lambda: summary(30, "tool")), ("summary 7d", lambda: summary(7, None)),
                            ("series 7d, 1d steps", chart),
                            ("baseline: raw events 30d (kind, outcome)", lambda: raw(30)),
                            ("baseline: raw events 7d (kind, outcome)", lambda: raw(7))]:
            times = []
            for _ in range(5):
                started = loop.time()
                result = await make()
                times.append((loop.time() - started) * 1000)
            print(f"  {label:<38} {statistics.median(times):>10.1f}")
            if label == "summary 30d":
                volumes, metrics = result["volumes"], result["metrics"]  # type: ignore[index]
                print(f"    tasks {volumes['tasks']:,}, requests {volumes['requests']:,}, calls "
                      f"{volumes['tool_calls'] + volumes['commands']:,}, success {metrics['task_success_rate']['value']}, "
                      f"median cycle {metrics['median_cycle_time_s']['value']} s")
    finally:
        await database.close()


def statistics_refreshed(url: str) -> None:
    """What autovacuum (PostgreSQL) or `PRAGMA optimize` (SQLite) does on a live server after a
    bulk load: fresh planner statistics (and on PostgreSQL the visibility map index-only scans use)."""
    path = sqlite_path(url)
    if path is not None:
        with sqlite3.connect(path) as connection:
            connection.execute("ANALYZE")
        return
    with psycopg.connect(sync_url(url).replace("postgresql+psycopg", "postgresql"), autocommit=True) as connection:
        for table in ("metric_tasks", "metric_hours", "metric_days"):
            connection.execute(f"VACUUM ANALYZE {table}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--keep", action="store_true", help="keep the generated databases (their URLs are printed)")
    parser.add_argument("--database", help="time the queries on a database kept by an earlier --keep run")
    arguments = parser.parse_args()
    print(machine.describe())
    if arguments.database:
        print(f"{arguments.database}:")
        asyncio.run(measure(arguments.database, None))
        return
    if arguments.backend in ("sqlite", "both"):
        directory = tempfile.mkdtemp(prefix="corral-bench-")
        try:
            print("SQLite (WAL):")
            asyncio.run(measure(f"sqlite:///{directory}/corral.db", arguments.events))
        finally:
            if arguments.keep:
                print(f"  kept: --database sqlite:///{directory}/corral.db")
            else:
                shutil.rmtree(directory)
    if arguments.backend in ("postgresql", "both"):
        admin = create_engine(arguments.pg_url, isolation_level="AUTOCOMMIT")
        name = f"corral_bench_{uuid.uuid4().hex[:8]}"
        with admin.connect() as connection:
            version = connection.scalar(text("SHOW server_version"))
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            print(f"PostgreSQL {version}:")
            asyncio.run(measure(arguments.pg_url.rsplit("/", 1)[0] + f"/{name}", arguments.events))
        finally:
            if arguments.keep:
                print(f"  kept: --database {arguments.pg_url.rsplit('/', 1)[0]}/{name}")
            else:
                with admin.connect() as connection:
                    connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


if __name__ == "__main__":
    main()
