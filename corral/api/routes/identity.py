"""REST routes for the directory and keys: whoami, teams, users, roles, API keys. Changes need
an admin-scoped credential of a user with the admin role; listings need `read` and the admin or
auditor role; anyone may see and revoke their own keys."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import Field

from corral.api.auth import authenticate
from corral.api.bodies import Strict
from corral.api.times import as_utc
from corral.errors import Forbidden, NotFound
from corral.events.model import utcnow
from corral.identity import directory, keys
from corral.identity.access import DEFAULT_KEY_SCOPES, Principal, parse_scopes
from corral.identity.directory import Team, User
from corral.identity.keys import MAX_GRACE, KeyInfo

router = APIRouter(tags=["identity"])
Caller = Annotated[Principal, Depends(authenticate)]


MAX_ID = 2**31 - 1
KeyId = Annotated[int, Path(ge=1, le=MAX_ID)]


class TeamIn(Strict):
    name: str = Field(min_length=1, max_length=100)
    description: str = Field("", max_length=2000)


class UserIn(Strict):
    email: str = Field(min_length=3, max_length=320)
    name: str = Field("", max_length=200)
    teams: list[str] = Field(default_factory=list, max_length=100)
    roles: list[str] = Field(default_factory=lambda: ["developer"], max_length=20)


class RoleIn(Strict):
    role: str = Field(min_length=1, max_length=64)


class TeamMembershipIn(Strict):
    team: str = Field(min_length=1, max_length=100)


class DisabledIn(Strict):
    disabled: bool


class KeyIn(Strict):
    user: str = Field(min_length=3, max_length=320, description="the owner's email")
    name: str = Field("", max_length=200)
    scopes: list[str] = Field(default_factory=lambda: sorted(DEFAULT_KEY_SCOPES), max_length=10)
    expires_at: datetime | None = None


class RotateIn(Strict):
    grace_seconds: int = Field(3600, ge=0, le=int(MAX_GRACE.total_seconds()),
                               description="how long the old key keeps working (at most 30 days)")


def _team(team: Team) -> dict[str, Any]:
    return {"name": team.name, "description": team.description, "members": team.members,
            "created_at": team.created_at.isoformat()}


def _user(user: User) -> dict[str, Any]:
    return {"email": user.email, "name": user.name, "teams": list(user.teams), "roles": list(user.roles),
            "disabled": user.disabled, "created_at": user.created_at.isoformat()}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _key(key: KeyInfo, now: datetime | None = None) -> dict[str, Any]:
    return {"id": key.id, "user": key.user_email, "name": key.name, "prefix": key.prefix,
            "scopes": list(key.scopes), "status": key.status(now or utcnow()),
            "created_at": _iso(key.created_at), "expires_at": _iso(key.expires_at),
            "revoked_at": _iso(key.revoked_at), "last_used_at": _iso(key.last_used_at),
            "replaced_by": key.replaced_by}


def _db(request: Request):  # noqa: ANN202 - the Database of this app
    return request.app.state.corral.database


async def _known_roles(request: Request) -> tuple[str, ...]:
    """The built-in roles and those the active policy declares (e.g. `sre`)."""
    return (await request.app.state.corral.policy.current()).compiled.policy.roles


@router.get("/whoami")
async def whoami(request: Request, caller: Caller) -> dict[str, Any]:
    """The caller: user, teams, roles, and the credential's scopes."""
    async with _db(request).read() as connection:
        organisation = await directory.organisation_name(connection)
    return {"email": caller.email, "organisation": organisation, "teams": list(caller.teams),
            "roles": sorted(caller.roles), "scopes": sorted(caller.scopes), "key_id": caller.key_id,
            "via": caller.via}


@router.post("/teams", status_code=201)
async def create_team(request: Request, body: TeamIn, caller: Caller) -> dict[str, Any]:
    caller.require("admin", "admin")
    async with _db(request).transaction() as connection:
        return _team(await directory.create_team(connection, caller, body.name, body.description))


@router.get("/teams")
async def list_teams(request: Request, caller: Caller) -> dict[str, Any]:
    caller.require("read", "admin", "auditor")
    async with _db(request).read() as connection:
        return {"teams": [_team(team) for team in await directory.list_teams(connection)]}


@router.post("/users", status_code=201)
async def create_user(request: Request, body: UserIn, caller: Caller) -> dict[str, Any]:
    caller.require("admin", "admin")
    known_roles = await _known_roles(request)
    async with _db(request).transaction() as connection:
        user = await directory.create_user(connection, caller, body.email, body.name, tuple(body.teams),
                                           tuple(body.roles), known_roles)
    return _user(user)


@router.get("/users")
async def list_users(request: Request, caller: Caller, team: str | None = None) -> dict[str, Any]:
    caller.require("read", "admin", "auditor")
    async with _db(request).read() as connection:
        return {"users": [_user(user) for user in await directory.list_users(connection, team)]}


@router.get("/users/{email}")
async def get_user(request: Request, email: str, caller: Caller) -> dict[str, Any]:
    caller.require("read")
    if directory.normalise_email(email) != caller.email:
        caller.require("read", "admin", "auditor")
    async with _db(request).read() as connection:
        return _user(await directory.get_user(connection, email))


@router.post("/users/{email}/roles")
async def grant_role(request: Request, email: str, body: RoleIn, caller: Caller) -> dict[str, Any]:
    caller.require("admin", "admin")
    known_roles = await _known_roles(request)
    async with _db(request).transaction() as connection:
        return _user(await directory.grant_role(connection, caller, email, body.role, known_roles))


@router.delete("/users/{email}/roles/{role}")
async def revoke_role(request: Request, email: str, role: str, caller: Caller) -> dict[str, Any]:
    caller.require("admin", "admin")
    async with _db(request).transaction() as connection:
        return _user(await directory.revoke_role(connection, caller, email, role))


@router.post("/users/{email}/teams")
async def add_to_team(request: Request, email: str, body: TeamMembershipIn, caller: Caller) -> dict[str, Any]:
    caller.require("admin", "admin")
    async with _db(request).transaction() as connection:
        return _user(await directory.add_to_team(connection, caller, email, body.team))


@router.delete("/users/{email}/teams/{team}")
async def remove_from_team(request: Request, email: str, team: str, caller: Caller) -> dict[str, Any]:
    caller.require("admin", "admin")
    async with _db(request).transaction() as connection:
        return _user(await directory.remove_from_team(connection, caller, email, team))


@router.patch("/users/{email}")
async def set_disabled(request: Request, email: str, body: DisabledIn, caller: Caller) -> dict[str, Any]:
    caller.require("admin", "admin")
    async with _db(request).transaction() as connection:
        return _user(await directory.set_disabled(connection, caller, email, body.disabled))


@router.post("/keys", status_code=201)
async def create_key(request: Request, body: KeyIn, caller: Caller) -> dict[str, Any]:
    """Create a key; the answer's `key` is the only time the plaintext is shown."""
    caller.require("admin", "admin")
    expires_at = as_utc(body.expires_at, "expires_at")
    async with _db(request).transaction() as connection:
        plaintext, key = await keys.create_key(connection, caller, body.user, name=body.name,
                                               scopes=parse_scopes(body.scopes), expires_at=expires_at)
    return {"key": plaintext, **_key(key)}


@router.get("/keys")
async def list_keys(
    request: Request, caller: Caller, user: str | None = None,
    include_inactive: Annotated[bool, Query(description="also revoked and expired keys")] = False,
) -> dict[str, Any]:
    """Admins and auditors see every key; anyone else, their own."""
    caller.require("read")
    if not caller.roles.intersection({"admin", "auditor"}):
        if user is not None and directory.normalise_email(user) != caller.email:
            raise Forbidden("you can only list your own keys")
        user = caller.email
    async with _db(request).read() as connection:
        return {"keys": [_key(key) for key in await keys.list_keys(connection, user, include_inactive)]}


async def _own_or_admin(request: Request, caller: Principal, key_id: int) -> None:
    """Owners and admins may act on a key; anyone else is told it does not exist (403 would
    reveal which ids do)."""
    caller.require("read")
    async with _db(request).read() as connection:
        key = await keys.get_key(connection, key_id)
    if key.user_email != caller.email and not ("admin" in caller.roles and "admin" in caller.scopes):
        raise NotFound(f"no key with id {key_id}; `corral admin key list` shows the keys")


@router.post("/keys/{key_id}/revoke")
async def revoke_key(request: Request, key_id: KeyId, caller: Caller) -> dict[str, Any]:
    """Revoke a key at once. Anyone may revoke their own keys."""
    await _own_or_admin(request, caller, key_id)
    async with _db(request).transaction() as connection:
        return _key(await keys.revoke_key(connection, caller, key_id))


@router.post("/keys/{key_id}/rotate", status_code=201)
async def rotate_key(request: Request, key_id: KeyId, caller: Caller, body: RotateIn | None = None) -> dict[str, Any]:
    """A new key replacing this one; the old key works for `grace_seconds` more."""
    caller.require("admin", "admin")
    grace = timedelta(seconds=(body or RotateIn()).grace_seconds)
    async with _db(request).transaction() as connection:
        plaintext, key = await keys.rotate_key(connection, caller, key_id, grace)
    return {"key": plaintext, **_key(key)}
