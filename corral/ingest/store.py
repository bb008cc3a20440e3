"""Storing reported events: who they belong to, and each keyed event once.

A reporter's claim about whose events these are is checked here: a caller reports their own
events; naming another user needs the admin role (a collector or an import on someone's behalf).
Keyed events are inserted with ON CONFLICT DO NOTHING, so a batch sent twice (a retry, a
re-import, a restarted shipper) stores each event exactly once."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from corral.errors import Forbidden
from corral.events.model import Event
from corral.identity.access import Principal
from corral.identity.directory import normalise_email
from corral.ingest.schema import IngestEvent
from corral.store.tables import events, team_members, teams, users


@dataclass(frozen=True)
class Owner:
    email: str
    team: str | None
    known: bool = True


async def owners_of(connection: AsyncConnection, caller: Principal, emails: Iterable[str | None]) -> dict[str | None, Owner]:
    """Whom each named user's events belong to (None: the caller). Raises Forbidden when a
    non-admin names someone else; an admin may name a user Corral does not know yet (kept as
    named, without a team)."""
    owners: dict[str | None, Owner] = {None: Owner(caller.email, caller.team)}
    others = set()
    for email in emails:
        if email is None:
            continue
        normal = normalise_email(email)
        if normal == caller.email:
            owners[email] = owners[None]
        else:
            others.add((email, normal))
    if not others:
        return owners
    if "admin" not in caller.roles:
        raise Forbidden("you can report only your own events; reporting for another user needs the admin role")
    wanted = {normal for _, normal in others}
    rows = await connection.execute(
        select(users.c.email, teams.c.name)
        .select_from(users.outerjoin(team_members, team_members.c.user_id == users.c.id)
                     .outerjoin(teams, teams.c.id == team_members.c.team_id))
        .where(users.c.email.in_(wanted))
        .order_by(users.c.email, team_members.c.added_at, teams.c.name)
    )
    first_team: dict[str, str | None] = {}
    for email, team in rows:
        first_team.setdefault(email, team)
    for email, normal in others:
        owners[email] = Owner(normal, first_team[normal], True) if normal in first_team else Owner(normal, None, False)
    return owners


def as_event(item: IngestEvent, owner: Owner, source: str, key_id: int | None) -> Event:
    attributes = dict(item.attributes)
    if not owner.known:
        attributes["unknown_user"] = True
    return Event(kind=item.kind, time=item.time, user_email=owner.email, team=owner.team, key_id=key_id,
                 client=item.client, task_id=item.task_id, mode=item.mode, action=item.action,
                 resource=item.resource, outcome=item.outcome, duration_ms=item.duration_ms,
                 tokens_in=item.tokens_in, tokens_out=item.tokens_out, cost_usd=item.cost_usd,
                 attributes=attributes, source=source, event_key=item.key)


async def store_events(connection: AsyncConnection, batch: list[Event]) -> int:
    """Insert the events in the caller's transaction; return how many were new (an event whose
    user already has its key stored is skipped: keys are per user)."""
    if not batch:
        return 0
    dialect = sqlite if connection.dialect.name == "sqlite" else postgresql
    keyed = [event.row() for event in batch if event.event_key is not None]
    loose = [event.row() for event in batch if event.event_key is None]
    stored = 0
    if keyed:
        # One row per user and key within the batch too: the database would refuse a batch holding one twice.
        unique = {(row["user_email"], row["event_key"]): row for row in keyed}
        # Skip what is already stored before inserting: on PostgreSQL a conflicting insert still
        # uses up an id, and gaps in ids hold up the metrics' rollup (corral.metrics.rollup).
        for user in {user for user, _ in unique}:
            wanted = [key for owner, key in unique if owner == user]
            for start in range(0, len(wanted), 1000):
                chunk = wanted[start:start + 1000]
                already = select(events.c.event_key).where(events.c.user_email == user, events.c.event_key.in_(chunk))
                for stored_key in await connection.scalars(already):
                    unique.pop((user, stored_key), None)
        statement = (dialect.insert(events).on_conflict_do_nothing(index_elements=["user_email", "event_key"])
                     .returning(events.c.id))
        stored += len((await connection.execute(statement, list(unique.values()))).all()) if unique else 0
    if loose:
        await connection.execute(events.insert(), loose)
        stored += len(loose)
    return stored
