"""REST routes for `corral connect`: the policy compiled into an agent's own configuration for
one person, with a new personal key or one they already have, and the check of an installed file
against the current policy (drift). The compiling is corral/clients; here the person is found,
the key made or checked and the policy read. Admins may connect and check anyone; others only
themselves. The key appears only inside the files (it is the person's own credential, shown
once, like a key made with `corral admin key create`) and is never logged.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from corral.api.auth import authenticate
from corral.api.bodies import Strict
from corral.clients import compile_client
from corral.clients.compile import ENGINE_CLIENT, Compiled, Target
from corral.clients.drift import differences, read_installed
from corral.errors import Forbidden, InvalidRequest
from corral.events.model import utcnow
from corral.identity import directory, keys, tokens
from corral.identity.access import Principal, scope_allows
from corral.identity.directory import User
from corral.identity.keys import KeyInfo
from corral.policy.engine import Subject
from corral.store.tables import api_keys

router = APIRouter(tags=["connect"])
Caller = Annotated[Principal, Depends(authenticate)]
ClientName = Literal["roo", "claude-code", "cline"]
KEY_SCOPES = ("gateway", "ingest")  # what an agent's key does: model and MCP traffic, hooks, telemetry
MAX_FILE_CHARS = 1_000_000


class ConnectIn(Strict):
    client: ClientName
    user: str | None = Field(None, min_length=3, max_length=320, description="whom for; default: the caller")
    key: str | None = Field(None, max_length=200, description="a live key of theirs with the gateway scope; "
                                                               "default: a new key (gateway, ingest)")
    url: str | None = Field(None, max_length=2000, pattern=r"^https?://\S+$",
                            description="Corral's URL as the agent reaches it; default: this request's")
    roomodes: bool = Field(False, description="Roo Code: also a .roomodes with the policy's modes")


class CheckIn(Strict):
    content: str = Field(max_length=MAX_FILE_CHARS, description="the installed file")
    path: str | None = Field(None, max_length=4096, description="its name, for messages")
    client: ClientName | None = None
    user: str | None = Field(None, min_length=3, max_length=320,
                             description="whose file, for files that hold no key; default: the caller")


@router.post("/connect")
async def connect(request: Request, body: ConnectIn, caller: Caller) -> dict[str, Any]:
    """The files that connect `client` to Corral for a person, and what it cannot express."""
    email = directory.normalise_email(body.user) if body.user else caller.email
    _may_act_for(caller, email, "gateway", "read")
    corral = request.app.state.corral
    effective = await corral.policy.current()
    if body.key is not None:
        async with corral.database.read() as connection:
            user = await directory.get_user(connection, email)
            info = await _given_key(connection, body.key, user)
        key = body.key
    else:
        scopes = frozenset(s for s in KEY_SCOPES if email != caller.email or scope_allows(caller.scopes, s))
        async with corral.database.transaction() as connection:
            user = await directory.get_user(connection, email)
            key, info = await keys.create_key(connection, caller, user.email, name=f"connect-{body.client}",
                                              scopes=scopes)
    url = (body.url or str(request.base_url)).rstrip("/")
    compiled = compile_client(Target(body.client, _subject(user, body.client), key, url, effective, utcnow(),
                                     roomodes=body.roomodes))
    exports = body.client != "roo" and effective.compiled.policy.clients.telemetry  # Roo sends no telemetry
    if exports and not scope_allows(frozenset(info.scopes), "ingest"):
        compiled.unexpressed.append(f"key {info.prefix} has no ingest scope, so Corral refuses the agent's "
                                    "OpenTelemetry export; connect without --key for a key that has it")
    return {"client": body.client, "user": user.email, "policy_version": effective.compiled.version,
            "key": {"id": info.id, "prefix": info.prefix, "created": body.key is None}, **_files(compiled)}


@router.post("/connect/check")
async def check(request: Request, body: CheckIn, caller: Caller) -> dict[str, Any]:
    """Whether an installed file still says what the current policy gives; a key in it that no
    longer works is a difference too."""
    if not scope_allows(caller.scopes, "read"):
        caller.require("gateway")
    name = PurePath(body.path).name if body.path else "the file"
    installed = read_installed(body.content, name)
    if body.client is not None and body.client != installed.client:
        raise InvalidRequest(f"{name} is a {installed.client} file, not a {body.client} one")
    corral = request.app.state.corral
    found: list[str] = []
    async with corral.database.read() as connection:
        owner = None
        if installed.key is not None:
            info, problem = await _key_status(connection, installed.key)
            owner = info.user_email if info else None
            if problem:
                found.append(f"the key in {name} cannot be used ({problem}): connect again for a new one")
        asked = directory.normalise_email(body.user) if body.user else None
        if owner and asked and asked != owner:
            raise InvalidRequest(f"the key in {name} is not {asked}'s; leave --user out for files that hold a key")
        email = owner or asked or caller.email
        _may_act_for(caller, email)
        user = await directory.get_user(connection, email)
    effective = await corral.policy.current()
    target = Target(installed.client, _subject(user, installed.client), installed.key or "",
                    installed.url or str(request.base_url).rstrip("/"), effective, utcnow(),
                    roomodes=installed.kind == "roomodes")
    expected = next(f for f in compile_client(target).files if f.kind == installed.kind)
    found += differences(body.content, installed.kind, expected)
    return {"current": not found, "client": installed.client, "file": installed.kind, "user": user.email,
            "policy_version": effective.compiled.version, "differences": found}


def _may_act_for(caller: Principal, email: str, *scopes: str) -> None:
    """People act for themselves with a credential that has `scopes`; only admins (with an admin
    credential) act for someone else. Connecting needs `read` besides `gateway`, and the keys it
    makes have no `read`: an agent's key cannot make its owner more keys."""
    if email == caller.email:
        for scope in scopes:
            caller.require(scope)
    elif not ("admin" in caller.roles and scope_allows(caller.scopes, "admin")):
        raise Forbidden("only admins may connect or check someone else's agent; leave out the user to do your own")


def _subject(user: User, client: str) -> Subject:
    return Subject(user.email, user.teams, frozenset(user.roles), ENGINE_CLIENT[client])


def _files(compiled: Compiled) -> dict[str, Any]:
    return {"files": [{"path": f.path, "content": f.content, "mode": f"{f.mode:04o}", "install": f.install}
                      for f in compiled.files],
            "unexpressed": compiled.unexpressed, "next": compiled.next_steps}


async def _given_key(connection: AsyncConnection, key: str, user: User) -> KeyInfo:
    """The record of a key someone wants their agent to use: live, theirs, and able to use the gateway."""
    info, problem = await _key_status(connection, key)
    if problem:
        raise InvalidRequest(f"the key you gave cannot be used ({problem}); leave out the key to get a new one")
    assert info is not None
    if info.user_email != user.email:
        raise InvalidRequest(f"the key you gave is not {user.email}'s; give one of theirs, or none for a new one")
    if not scope_allows(frozenset(info.scopes), "gateway"):
        raise InvalidRequest(f"key {info.prefix} has no gateway scope, which an agent needs; give another key, or "
                             "none for a new one")
    return info


async def _key_status(connection: AsyncConnection, key: str) -> tuple[KeyInfo | None, str | None]:
    """A key's record and why it does not work (None when it does). Checked as authentication
    checks it, but without counting as a use of the key: checking a file is not the agent at work."""
    if not tokens.is_well_formed(key):
        return None, "it is not a Corral key (ck_ followed by 49 letters and digits)"
    found = (await connection.execute(select(api_keys.c.id).where(api_keys.c.key_hash == tokens.hash_key(key)))).first()
    if found is None:
        return None, "Corral does not know it"
    info = await keys.get_key(connection, found.id)
    status = info.status(utcnow())
    if status != "active":
        return info, f"key {info.prefix} is {status}"
    if (await directory.get_user(connection, info.user_email)).disabled:
        return info, f"{info.user_email} is disabled"
    return info, None
