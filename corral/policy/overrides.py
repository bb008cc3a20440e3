"""Overrides: incident-time, time-boxed changes layered on the active policy. Each kind can
only make decisions stricter or reroute a profile to its fallbacks; none can allow what the
policy does not. This module owns their shape and checks (pure) and their storage, where every
add, removal and expiry records an `override.*` event.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from corral.audit.ledger import record_change
from corral.errors import InvalidRequest, NotFound
from corral.events.model import Event, utcnow
from corral.identity.access import Principal
from corral.policy.schema import Policy
from corral.store.tables import overrides as overrides_table
from corral.store.tables import teams, users

MAX_TTL = timedelta(days=7)  # an override is for an incident; a lasting change is a policy proposal
_SCOPE = re.compile(r"^(org|\*|team:[a-z0-9][a-z0-9._-]{0,99}|user:[^@\s*]+@[^@\s*]+)$")
# kind: (what --target names, the parameters it takes and their types)
KINDS: dict[str, tuple[str, dict[str, type]]] = {
    "switch_profile": ("a profile", {"to": str}),  # to: one of the profile's own fallbacks
    "limit_workload": ("who: org, team:NAME or user:EMAIL",
                       {"max_tokens": int, "concurrency": int, "denied_modes": list}),
    "tighten_approvals": ("who: org, team:NAME or user:EMAIL", {}),
    "scope_tasks": ("who: org, team:NAME or user:EMAIL", {"max_requests": int, "max_cost_usd": float}),
    "disable_tool": ("a server/tool glob", {}),
    "disable_server": ("an MCP server", {}),
    "read_only": ("who: org, team:NAME or user:EMAIL", {}),
}


_DESCRIBED = {int: "a positive whole number", float: "a positive number", str: "a non-empty text",
              list: "a non-empty list of names"}


@dataclass(frozen=True)
class Override:
    id: int
    kind: str
    target: str
    expires_at: datetime
    params: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    created_by: str = ""
    created_at: datetime | None = None
    removed_at: datetime | None = None

    def active(self, now: datetime) -> bool:
        return self.removed_at is None and now < self.expires_at

    def covers(self, email: str, teams: tuple[str, ...]) -> bool:
        """Whether an override aimed at people (org, team:X, user:X) covers this person."""
        kind, _, name = self.target.partition(":")
        if self.target in ("org", "*"):
            return True
        if kind == "team":
            return name in teams
        return kind == "user" and name == email.lower()


def check_override(kind: str, target: str, params: dict[str, Any], policy: Policy) -> dict[str, Any]:
    """Validate an override against the active policy; return its parameters, normalised."""
    if kind not in KINDS:
        raise InvalidRequest(f"unknown override kind {kind!r}; kinds are {', '.join(KINDS)}")
    what, accepted = KINDS[kind]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        takes = ", ".join(accepted) or "no parameters"
        raise InvalidRequest(f"{kind} does not take {unknown[0]!r}; it takes {takes}")
    clean: dict[str, Any] = {}
    for name, value in params.items():
        expected = accepted[name]
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if expected is list:
            valid = isinstance(value, list) and bool(value) and all(isinstance(item, str) for item in value)
        elif expected is str:
            valid = isinstance(value, str) and bool(value.strip())
        else:
            valid = isinstance(value, expected) and not isinstance(value, bool) and math.isfinite(value) and value > 0
        if not valid:
            raise InvalidRequest(f"{kind}: {name} must be {_DESCRIBED[expected]}")
        clean[name] = value
    if kind == "switch_profile":
        if target not in policy.profiles:
            raise InvalidRequest(f"no profile named {target!r}; profiles are {', '.join(policy.profiles) or 'none'}")
        fallbacks = policy.profiles[target].targets[1:]
        if not fallbacks:
            raise InvalidRequest(f"profile {target!r} has no fallback target; add one to the policy's profile first")
        if clean.get("to") is not None and clean["to"] not in fallbacks:
            raise InvalidRequest(f"to must be one of the fallback targets of {target!r}: {', '.join(fallbacks)}")
    elif kind == "disable_tool":
        if not re.match(r"^[^/\s]+/\S+$", target):
            raise InvalidRequest(f"disable_tool needs a server/tool target (a glob, like tracker/delete_*), not {target!r}")
    elif kind == "disable_server":
        if target not in policy.mcp_servers:
            raise InvalidRequest(f"no MCP server named {target!r} in the policy")
    elif not _SCOPE.match(target):
        raise InvalidRequest(f"{kind} needs --target {what}, not {target!r}")
    if kind == "limit_workload":
        if not clean:
            raise InvalidRequest("limit_workload needs max_tokens, concurrency or denied_modes")
        for mode in clean.get("denied_modes", []):
            if mode not in policy.modes:
                raise InvalidRequest(f"no mode named {mode!r} in the policy")
    if kind == "scope_tasks" and not clean:
        raise InvalidRequest("scope_tasks needs max_requests or max_cost_usd")
    return clean


# ---- storage --------------------------------------------------------------------------------


def _from_row(row: Any) -> Override:
    return Override(id=row.id, kind=row.kind, target=row.target, params=dict(row.params or {}),
                    reason=row.reason, created_by=row.created_by, created_at=row.created_at,
                    expires_at=row.expires_at, removed_at=row.removed_at)


async def add_override(connection: AsyncConnection, actor: Principal, policy: Policy, kind: str, target: str,
                       ttl: timedelta, reason: str, params: dict[str, Any]) -> Override:
    if not timedelta(seconds=60) <= ttl <= MAX_TTL:
        raise InvalidRequest("an override lasts from 1 minute to 7 days; make lasting changes with `corral policy propose`")
    if not reason.strip():
        raise InvalidRequest("say why with -m: the reason is part of the record")
    target = target.strip()
    if target.startswith(("team:", "user:")):
        target = target.lower()
    clean = check_override(kind, target, params, policy)
    await _check_exists(connection, target)
    now = utcnow()
    values = dict(kind=kind, target=target, params=clean, reason=reason.strip(), created_by=actor.email,
                  created_at=now, expires_at=now + ttl)
    result = await connection.execute(insert(overrides_table).values(**values))
    override = Override(id=result.inserted_primary_key[0], **values)
    await _event(connection, actor.email, actor.team, "override.added", override)
    return override


async def _check_exists(connection: AsyncConnection, target: str) -> None:
    """An override for a team or person nobody has would silently do nothing: refuse it."""
    kind, _, name = target.partition(":")
    if kind == "team":
        found = (await connection.execute(select(teams.c.id).where(teams.c.name == name))).first()
    elif kind == "user":
        found = (await connection.execute(select(users.c.id).where(users.c.email == name))).first()
    else:
        return
    if found is None:
        raise InvalidRequest(f"no {'team' if kind == 'team' else 'user'} {name!r}; check `corral admin {kind} list`")


async def remove_override(connection: AsyncConnection, actor: Principal, override_id: int) -> Override:
    row = (await connection.execute(select(overrides_table).where(overrides_table.c.id == override_id))).first()
    if row is None:
        raise NotFound(f"no override {override_id}; `corral override list --all` shows them")
    now = utcnow()
    result = await connection.execute(
        update(overrides_table)
        .where(overrides_table.c.id == override_id, overrides_table.c.removed_at.is_(None),
               overrides_table.c.expires_at > now)
        .values(removed_at=now, removed_by=actor.email))
    if result.rowcount == 0:
        raise NotFound(f"override {override_id} has already ended")
    override = _from_row(row)
    await _event(connection, actor.email, actor.team, "override.removed", override)
    return Override(**{**override.__dict__, "removed_at": now})


async def list_overrides(connection: AsyncConnection, include_ended: bool = False) -> list[Override]:
    query = select(overrides_table).order_by(overrides_table.c.id.desc())
    if not include_ended:
        query = query.where(overrides_table.c.removed_at.is_(None), overrides_table.c.expires_at > utcnow())
    return [_from_row(row) for row in await connection.execute(query.limit(1000))]


async def record_expiries(connection: AsyncConnection) -> list[Override]:
    """Record an `override.expired` event for each override that has run out, exactly once
    (the update is the claim, so replicas sweeping together record each expiry once)."""
    now = utcnow()
    due = [_from_row(row) for row in await connection.execute(
        select(overrides_table).where(overrides_table.c.removed_at.is_(None), overrides_table.c.expires_at <= now,
                                      overrides_table.c.expiry_recorded.is_(False)))]
    expired = []
    for override in due:
        claimed = await connection.execute(
            update(overrides_table)
            .where(and_(overrides_table.c.id == override.id, overrides_table.c.expiry_recorded.is_(False)))
            .values(expiry_recorded=True))
        if claimed.rowcount:
            await _event(connection, "corral", None, "override.expired", override)
            expired.append(override)
    return expired


_ACTIONS = {"override.added": "override.add", "override.removed": "override.remove",
            "override.expired": "override.expire"}


async def _event(connection: AsyncConnection, email: str, team: str | None, kind: str, override: Override) -> None:
    await record_change(connection, Event(
        kind=kind, action=_ACTIONS[kind],
        user_email=email, team=team, client="corral-api" if email != "corral" else "corral",
        resource=f"override:{override.id}", decision="allow", outcome="ok",
        attributes={"kind": override.kind, "target": override.target, "params": override.params,
                    "reason": override.reason, "expires_at": override.expires_at.isoformat()}))
