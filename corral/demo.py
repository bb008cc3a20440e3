"""Demo data for `corral serve --demo`: a small organisation to explore, with a week of its
agents' activity (reported events, so `corral metrics` has something to show). Seeded once; a
restart leaves what is there alone."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import select

from corral.events.model import Event
from corral.identity.directory import create_team, create_user
from corral.ingest.store import store_events
from corral.policy.versions import active_version
from corral.store.database import Database
from corral.store.tables import teams

DEMO_TEAMS = {
    "platform": "Builds and runs the developer platform",
    "payments": "Owns the payments services",
    "contractors": "External contractors",
    "security": "Reviews provider and access changes",
}
DEMO_USERS = [
    ("alice@example.com", "Alice Developer", ("platform",), ("developer",)),
    ("bob@example.com", "Bob Approver", ("platform",), ("developer", "approver")),
    ("priya@example.com", "Priya Payments", ("payments",), ("developer",)),
    ("carol@example.com", "Carol Contractor", ("contractors",), ("contractor",)),
    ("dana@example.com", "Dana Auditor", (), ("auditor",)),
    ("evan@example.com", "Evan Approver", ("platform",), ("developer", "approver")),
    ("sam@example.com", "Sam Security", ("security",), ("approver",)),
    ("omar@example.com", "Omar On-call", ("platform",), ("developer", "sre")),
]


async def seed_demo(database: Database) -> bool:
    """Create the demo teams and users unless they exist; True if anything was created."""
    async with database.transaction() as connection:
        await database.lock_for_startup(connection)
        if (await connection.execute(select(teams.c.id).where(teams.c.name == "platform"))).first():
            return False
        for name, description in DEMO_TEAMS.items():
            await create_team(connection, None, name, description)
        known_roles = (await active_version(connection)).policy.roles  # the demo policy adds `sre`
        for email, full_name, team_names, roles in DEMO_USERS:
            await create_user(connection, None, email, full_name, team_names, roles, known_roles)
        await store_events(connection, demo_activity(datetime.now(timezone.utc)))
    return True


_WORKERS = [("alice@example.com", "platform", "roo-code"), ("bob@example.com", "platform", "cline"),
            ("evan@example.com", "platform", "claude-code"), ("priya@example.com", "payments", "roo-code"),
            ("carol@example.com", "contractors", "cline")]
_MODELS = [("openai", "gpt-5-mini", 0.004), ("anthropic", "claude-sonnet-4-5", 0.03)]
_COMMANDS = ["npm test", "pytest -q", "git status", "make lint", "git diff"]


def demo_activity(now: datetime, days: int = 7) -> list[Event]:
    """A week of tasks by the demo developers: requests, tool calls, commands (some failing),
    a few rollbacks, mostly completions. The same every time (a fixed seed)."""
    rng = random.Random(2026)
    found: list[Event] = []
    for number in range(12 * days):
        user, team, client = _WORKERS[number % len(_WORKERS)]
        provider, model, price = _MODELS[rng.random() < 0.3]
        start = now - timedelta(days=days) + timedelta(hours=rng.uniform(0, 24 * days - 1))
        who: dict[str, Any] = {"user_email": user, "team": team, "client": client, "task_id": f"demo-{number}",
                               "mode": rng.choice(["code", "code", "architect", "ask"]), "source": "demo"}
        events = [Event(kind="task.started", time=start, **who)]
        minute = 0.0
        for step in range(rng.randint(4, 14)):
            minute += rng.uniform(0.5, 4)
            when = start + timedelta(minutes=minute)
            if step % 2 == 0:
                tokens = rng.randint(3000, 30000)
                events.append(Event(kind="llm.request", time=when, outcome="ok", tokens_in=tokens, tokens_out=tokens // 20,
                                    cost_usd=round(price * tokens / 1000, 6), resource=model,
                                    attributes={"provider": provider, "model": model}, **who))
            elif rng.random() < 0.4:
                outcome = rng.choices(["ok", "error", "timeout"], [8, 2, 1])[0]
                events.append(Event(kind="command.exec", time=when, resource=rng.choice(_COMMANDS), outcome=outcome, **who))
            else:
                tool = rng.choice(["read_file", "write_to_file", "apply_diff", "list_files"])
                events.append(Event(kind="tool.result", time=when, resource=tool, attributes={"tool": tool},
                                    outcome="ok" if rng.random() < 0.95 else "error", **who))
        if rng.random() < 0.1:
            events.append(Event(kind="task.rolled_back", time=start + timedelta(minutes=minute / 2), **who))
        end = start + timedelta(minutes=minute + 1)
        if end < now - timedelta(hours=1):  # the latest tasks are still running
            ending = rng.random()
            kind = "task.completed" if ending < 0.8 else "task.failed" if ending < 0.9 else "task.abandoned"
            events.append(Event(kind=kind, time=end, outcome={"task.completed": "ok", "task.failed": "error"}.get(
                kind, "abandoned"), **who))
        found += [Event(**{**event.__dict__, "event_key": f"demo-{number}-{index}"}) for index, event in enumerate(events)]
    return found
