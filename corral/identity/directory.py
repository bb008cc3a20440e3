"""The organisation's directory: the organisation, its teams, its users, their team memberships
and roles. Every change records an `admin.*` event in the same transaction, so the change and
its record commit together. Lookups of users by email are case-insensitive.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from corral.audit.ledger import record_change
from corral.errors import Conflict, InvalidRequest, NotFound
from corral.events.model import Event, utcnow
from corral.identity.access import BUILTIN_ROLES, Principal, check_role
from corral.store.tables import organisations, team_members, teams, user_roles, users

_TEAM_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")
_EMAIL = re.compile(r"^[^@\s/]{1,64}@[^@\s/]{1,255}$")
# An event's kind says what happened ("admin.key.revoked"); its action, what was attempted.
_PRESENT = {"created": "create", "revoked": "revoke", "rotated": "rotate", "granted": "grant",
            "role_granted": "grant_role", "role_revoked": "revoke_role", "team_added": "add_team",
            "team_removed": "remove_team", "disabled": "disable", "enabled": "enable"}


@dataclass(frozen=True)
class Team:
    id: int
    name: str
    description: str
    created_at: datetime
    members: int = 0


@dataclass(frozen=True)
class User:
    id: int
    email: str
    name: str
    teams: tuple[str, ...]
    roles: tuple[str, ...]
    created_at: datetime
    disabled: bool = False


def normalise_email(email: str) -> str:
    value = email.strip().lower()
    if not _EMAIL.match(value):
        raise InvalidRequest(f"{email!r} is not an email address")
    return value


def check_team_name(name: str) -> str:
    value = name.strip().lower()
    if not _TEAM_NAME.match(value):
        raise InvalidRequest(
            f"{name!r} is not a valid team name: use 1-100 lowercase letters, digits, '.', '_' or '-'"
        )
    return value


async def admin_event(
    connection: AsyncConnection, actor: Principal | None, kind: str, resource: str, **attributes: object
) -> None:
    """Record a control-plane change made by `actor` (None: Corral itself, at start)."""
    subject, _, verb = kind.rpartition(".")
    await record_change(
        connection,
        Event(
            kind=kind,
            action=f"{subject}.{_PRESENT.get(verb, verb)}",
            user_email=actor.email if actor else "corral",
            team=actor.team if actor else None,
            key_id=actor.key_id if actor else None,
            client="corral-api" if actor else "corral",
            resource=resource,
            decision="allow",
            outcome="ok",
            attributes=dict(attributes),
        ),
    )


async def ensure_organisation(connection: AsyncConnection, name: str) -> int:
    found = (await connection.execute(select(organisations.c.id).order_by(organisations.c.id))).first()
    if found:
        return found.id
    result = await connection.execute(insert(organisations).values(name=name, created_at=utcnow()))
    return result.inserted_primary_key[0]


async def organisation_name(connection: AsyncConnection) -> str:
    found = (await connection.execute(select(organisations.c.name).order_by(organisations.c.id))).first()
    return found.name if found else ""


async def _team_id(connection: AsyncConnection, name: str) -> int:
    found = (await connection.execute(select(teams.c.id).where(teams.c.name == check_team_name(name)))).first()
    if found is None:
        raise NotFound(f"no team named {name!r}; `corral admin team list` shows the teams")
    return found.id


async def _user_id(connection: AsyncConnection, email: str) -> int:
    found = (await connection.execute(select(users.c.id).where(users.c.email == normalise_email(email)))).first()
    if found is None:
        raise NotFound(f"no user {email!r}; `corral admin user list` shows the users")
    return found.id


async def create_team(
    connection: AsyncConnection, actor: Principal | None, name: str, description: str = ""
) -> Team:
    name = check_team_name(name)
    org_id = await ensure_organisation(connection, "Corral")
    if (await connection.execute(select(teams.c.id).where(teams.c.name == name))).first():
        raise Conflict(f"a team named {name!r} already exists")
    now = utcnow()
    try:
        result = await connection.execute(
            insert(teams).values(org_id=org_id, name=name, description=description, created_at=now)
        )
    except IntegrityError:
        raise Conflict(f"a team named {name!r} already exists") from None
    await admin_event(connection, actor, "admin.team.created", f"team:{name}", description=description)
    return Team(id=result.inserted_primary_key[0], name=name, description=description, created_at=now)


async def list_teams(connection: AsyncConnection) -> list[Team]:
    member_count = (
        select(team_members.c.team_id, func.count().label("members")).group_by(team_members.c.team_id).subquery()
    )
    rows = await connection.execute(
        select(teams, func.coalesce(member_count.c.members, 0).label("members"))
        .select_from(teams.outerjoin(member_count, member_count.c.team_id == teams.c.id))
        .order_by(teams.c.name)
    )
    return [Team(id=r.id, name=r.name, description=r.description, created_at=r.created_at, members=r.members)
            for r in rows]


async def _memberships(connection: AsyncConnection, user_ids: list[int]) -> tuple[dict, dict]:
    team_rows = await connection.execute(
        select(team_members.c.user_id, teams.c.name)
        .join(teams, teams.c.id == team_members.c.team_id)
        .where(team_members.c.user_id.in_(user_ids))
        .order_by(team_members.c.added_at, teams.c.name)
    )
    role_rows = await connection.execute(
        select(user_roles.c.user_id, user_roles.c.role).where(user_roles.c.user_id.in_(user_ids))
        .order_by(user_roles.c.role)
    )
    team_map: dict[int, list[str]] = {}
    role_map: dict[int, list[str]] = {}
    for row in team_rows:
        team_map.setdefault(row.user_id, []).append(row.name)
    for row in role_rows:
        role_map.setdefault(row.user_id, []).append(row.role)
    return team_map, role_map


async def list_users(connection: AsyncConnection, team: str | None = None) -> list[User]:
    query = select(users).order_by(users.c.email)
    if team is not None:
        team_id = await _team_id(connection, team)
        query = query.join(team_members, team_members.c.user_id == users.c.id).where(team_members.c.team_id == team_id)
    rows = list(await connection.execute(query))
    team_map, role_map = await _memberships(connection, [r.id for r in rows])
    return [
        User(id=r.id, email=r.email, name=r.name, teams=tuple(team_map.get(r.id, ())),
             roles=tuple(role_map.get(r.id, ())), created_at=r.created_at, disabled=r.disabled_at is not None)
        for r in rows
    ]


async def get_user(connection: AsyncConnection, email: str) -> User:
    user_id = await _user_id(connection, email)
    row = (await connection.execute(select(users).where(users.c.id == user_id))).one()
    team_map, role_map = await _memberships(connection, [user_id])
    return User(id=row.id, email=row.email, name=row.name, teams=tuple(team_map.get(user_id, ())),
                roles=tuple(role_map.get(user_id, ())), created_at=row.created_at,
                disabled=row.disabled_at is not None)


async def create_user(
    connection: AsyncConnection,
    actor: Principal | None,
    email: str,
    name: str = "",
    teams_: tuple[str, ...] = (),
    roles: tuple[str, ...] = ("developer",),
    known_roles: tuple[str, ...] = BUILTIN_ROLES,
) -> User:
    email = normalise_email(email)
    role_names = sorted({check_role(role, known_roles) for role in roles})
    team_names = list(dict.fromkeys(check_team_name(team) for team in teams_))
    team_ids = [await _team_id(connection, team) for team in team_names]
    if (await connection.execute(select(users.c.id).where(users.c.email == email))).first():
        raise Conflict(f"a user {email!r} already exists")
    org_id = await ensure_organisation(connection, "Corral")
    now = utcnow()
    try:
        result = await connection.execute(insert(users).values(org_id=org_id, email=email, name=name, created_at=now))
    except IntegrityError:
        raise Conflict(f"a user {email!r} already exists") from None
    user_id = result.inserted_primary_key[0]
    for team_id in team_ids:
        await connection.execute(insert(team_members).values(team_id=team_id, user_id=user_id, added_at=now))
    for role in role_names:
        await connection.execute(insert(user_roles).values(user_id=user_id, role=role, granted_at=now))
    await admin_event(connection, actor, "admin.user.created", f"user:{email}", teams=team_names, roles=role_names)
    return await get_user(connection, email)


async def grant_role(
    connection: AsyncConnection, actor: Principal | None, email: str, role: str,
    known_roles: tuple[str, ...] = BUILTIN_ROLES,
) -> User:
    role = check_role(role, known_roles)
    user_id = await _user_id(connection, email)
    exists = (await connection.execute(
        select(user_roles).where(user_roles.c.user_id == user_id, user_roles.c.role == role))).first()
    if not exists:
        await connection.execute(insert(user_roles).values(user_id=user_id, role=role, granted_at=utcnow()))
        await admin_event(connection, actor, "admin.user.role_granted", f"user:{normalise_email(email)}", role=role)
    return await get_user(connection, email)


async def revoke_role(connection: AsyncConnection, actor: Principal | None, email: str, role: str) -> User:
    user_id = await _user_id(connection, email)
    name = role.strip().lower()
    if actor is not None and name == "admin" and actor.user_id == user_id:
        raise Conflict("you cannot remove your own admin role; ask another administrator")
    result = await connection.execute(
        delete(user_roles).where(user_roles.c.user_id == user_id, user_roles.c.role == name))
    if result.rowcount == 0:
        raise NotFound(f"{normalise_email(email)} does not have the role {role!r}")
    await admin_event(connection, actor, "admin.user.role_revoked", f"user:{normalise_email(email)}", role=name)
    return await get_user(connection, email)


async def add_to_team(connection: AsyncConnection, actor: Principal | None, email: str, team: str) -> User:
    user_id = await _user_id(connection, email)
    team_id = await _team_id(connection, team)
    exists = (await connection.execute(
        select(team_members).where(team_members.c.user_id == user_id, team_members.c.team_id == team_id))).first()
    if not exists:
        await connection.execute(insert(team_members).values(team_id=team_id, user_id=user_id, added_at=utcnow()))
        await admin_event(connection, actor, "admin.user.team_added", f"user:{normalise_email(email)}",
                          team=check_team_name(team))
    return await get_user(connection, email)


async def remove_from_team(connection: AsyncConnection, actor: Principal | None, email: str, team: str) -> User:
    user_id = await _user_id(connection, email)
    team_id = await _team_id(connection, team)
    result = await connection.execute(
        delete(team_members).where(team_members.c.user_id == user_id, team_members.c.team_id == team_id))
    if result.rowcount == 0:
        raise NotFound(f"{normalise_email(email)} is not in team {team!r}")
    await admin_event(connection, actor, "admin.user.team_removed", f"user:{normalise_email(email)}",
                      team=check_team_name(team))
    return await get_user(connection, email)


async def set_disabled(connection: AsyncConnection, actor: Principal | None, email: str, disabled: bool) -> User:
    """A disabled user's keys and tokens stop working at once; re-enabling restores them."""
    user_id = await _user_id(connection, email)
    if actor is not None and disabled and actor.user_id == user_id:
        raise Conflict("you cannot disable yourself; ask another administrator")
    await connection.execute(
        update(users).where(users.c.id == user_id).values(disabled_at=utcnow() if disabled else None))
    kind = "admin.user.disabled" if disabled else "admin.user.enabled"
    await admin_event(connection, actor, kind, f"user:{normalise_email(email)}")
    return await get_user(connection, email)
