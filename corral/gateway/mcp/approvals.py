"""Tool calls held for a second person: a call whose decision is `approve` becomes a pending
approval (who, what tool, the arguments with secrets redacted, why), and waits while an approver
decides with `corral approvals approve ID` / `reject ID -m WHY` or the REST API. Its status moves
once, from `pending` to `approved`, `rejected` or `expired` (and an approval a hook's caller came
back for, from `approved` to `used`); nobody approves their own call.
Every decision is recorded as an event and in the audit ledger.
"""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from corral.audit.ledger import record_change
from corral.audit.records import payload_sha256
from corral.errors import Conflict, Forbidden, NotFound
from corral.events.model import Event, utcnow
from corral.identity.access import Principal
from corral.policy.schema import SECRET_VALUE, secret_name
from corral.store.database import Database
from corral.store.tables import tool_approvals

APPROVER_ROLES = ("approver", "admin")
MAX_PENDING = 20  # held calls one person may have at once
POLL_S = 0.25  # how often a held call looks for a decision made on another replica
REDACTED = "[redacted]"
_NAMED = r"[a-z0-9_-]*(?:key|token|secret|password|passwd|pwd|auth|credential|cookie)[a-z0-9_-]*"
# Secrets inside text: credentials by their shape, `Bearer ...`, JWTs, a URL's password, and
# `name=value` / `name: value` where the name is a secret's.
_IN_TEXT = [
    (SECRET_VALUE, lambda m: REDACTED),
    (re.compile(r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{10,}"), lambda m: REDACTED),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"), lambda m: REDACTED),
    (re.compile(r"(?i)\b(bearer|basic|token)(\s+)[A-Za-z0-9._~+/=-]{6,}"), lambda m: f"{m[1]}{m[2]}{REDACTED}"),
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/\s@]+:)[^@\s/]+@"), lambda m: f"{m[1]}{REDACTED}@"),
    (re.compile(rf"(?i)\b({_NAMED})(\s*[=:]\s*)(?!\[redacted\])(\S+)"), lambda m: f"{m[1]}{m[2]}{REDACTED}"),
]


def redact_text(text: str) -> str:
    for pattern, replace in _IN_TEXT:
        text = pattern.sub(replace, text)
    return text


def redact(value: Any, name: str = "") -> Any:
    """Arguments as an approver may see them: everything under a secret's name (`token`,
    `password`, `auth`, ...), the value of a `{"name": "Authorization", "value": ...}` pair, and
    secrets inside text are replaced."""
    if name and secret_name(name) and value is not None and not isinstance(value, bool):
        return REDACTED
    if isinstance(value, dict):
        label = next((value[k] for k in ("name", "key", "header") if isinstance(value.get(k), str)), "")
        hidden = secret_name(label) if label else False
        return {key: REDACTED if hidden and key == "value" else redact(item, str(key)) for key, item in value.items()}
    if isinstance(value, list):
        return [redact(item) for item in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def _public(row: Any, now: datetime | None = None) -> dict[str, Any]:
    found = dict(row._mapping)
    if found["status"] == "pending" and (now or utcnow()) >= found["expires_at"]:
        found["status"] = "expired"
    for name in ("created_at", "expires_at", "decided_at"):
        found[name] = found[name].isoformat() if found[name] else None
    return found


async def request_approval(connection: AsyncConnection, principal: Principal, *, server: str, tool: str,
                           tool_class: str, arguments: dict[str, Any], rules: list[str], reason: str,
                           task_id: str | None, mode: str | None, wait_s: float,
                           action: str = "tool.call") -> dict[str, Any]:
    now = utcnow()
    waiting = (await connection.execute(select(func.count()).select_from(tool_approvals).where(
        tool_approvals.c.requested_by == principal.email, tool_approvals.c.status == "pending",
        tool_approvals.c.expires_at > now))).scalar_one()
    if waiting >= MAX_PENDING:
        raise Conflict(f"you already have {waiting} tool calls waiting for approval; wait for them to be decided "
                       "(`corral approvals list` shows them)")
    values = dict(status="pending", requested_by=principal.email, team=principal.team, key_id=principal.key_id,
                  server=server, tool=tool, tool_class=tool_class, arguments=redact(arguments),
                  arguments_sha256=payload_sha256(arguments), rules=rules, reason=reason, task_id=task_id, mode=mode,
                  created_at=now, expires_at=now + timedelta(seconds=wait_s), message="")
    approval_id = (await connection.execute(insert(tool_approvals).values(**values)
                                            .returning(tool_approvals.c.id))).scalar_one()
    await record_change(connection, Event(
        kind="approval.requested", action=action, user_email=principal.email, team=principal.team,
        key_id=principal.key_id, task_id=task_id, mode=mode, resource=f"{server}/{tool}", decision="approve",
        attributes={"approval_id": approval_id, "rules": rules, "class": tool_class,
                    "arguments_sha256": values["arguments_sha256"]}))
    return {"id": approval_id, **values}


async def open_approval(connection: AsyncConnection, email: str, server: str, tool: str, arguments_sha256: str,
                        approved_since: datetime) -> dict[str, Any] | None:
    """The latest approval of this very call (same person, tool and arguments) that can still
    let it through: pending and not expired, or approved since `approved_since` and not used.
    A hook cannot wait as long as an approver may take, so the agent's retry finds it here."""
    now = utcnow()
    row = (await connection.execute(
        select(tool_approvals).where(
            tool_approvals.c.requested_by == email.lower(), tool_approvals.c.server == server,
            tool_approvals.c.tool == tool, tool_approvals.c.arguments_sha256 == arguments_sha256,
            ((tool_approvals.c.status == "pending") & (tool_approvals.c.expires_at > now))
            | ((tool_approvals.c.status == "approved") & (tool_approvals.c.decided_at >= approved_since)))
        .order_by(tool_approvals.c.id.desc()).limit(1))).first()
    return _public(row, now) if row is not None else None


async def use_approval(connection: AsyncConnection, approval_id: int) -> bool:
    """Spend an approval on the call it was for: approved becomes used, once."""
    return (await connection.execute(update(tool_approvals).where(
        tool_approvals.c.id == approval_id, tool_approvals.c.status == "approved").values(status="used"))).rowcount == 1


async def get_approval(connection: AsyncConnection, approval_id: int) -> dict[str, Any]:
    row = (await connection.execute(select(tool_approvals).where(tool_approvals.c.id == approval_id))).first()
    if row is None:
        raise NotFound(f"no approval {approval_id}; `corral approvals list` shows the pending ones")
    return _public(row)


async def list_approvals(connection: AsyncConnection, status: str | None = "pending", limit: int = 100,
                         requested_by: str | None = None) -> list[dict[str, Any]]:
    query = select(tool_approvals).order_by(tool_approvals.c.id.desc()).limit(limit)
    if requested_by is not None:
        query = query.where(tool_approvals.c.requested_by == requested_by.lower())
    now = utcnow()
    if status == "pending":
        query = query.where(tool_approvals.c.status == "pending", tool_approvals.c.expires_at > now)
    elif status == "expired":
        query = query.where((tool_approvals.c.status == "expired") |
                            ((tool_approvals.c.status == "pending") & (tool_approvals.c.expires_at <= now)))
    elif status is not None:
        query = query.where(tool_approvals.c.status == status)
    return [_public(row, now) for row in (await connection.execute(query)).all()]


async def decide(connection: AsyncConnection, approval_id: int, approver: Principal, verdict: str,
                 message: str) -> dict[str, Any]:
    """Approve or reject a pending call. Approvers (role approver or admin) only, never the
    caller themselves; a call decided, expired or given up already cannot be decided again."""
    approver.require("policy", *APPROVER_ROLES)
    found = await get_approval(connection, approval_id)
    if found["requested_by"].lower() == approver.email.lower():
        raise Forbidden(f"approval {approval_id} is for your own call; another approver must decide it")
    if found["status"] != "pending":
        raise Conflict(f"approval {approval_id} is {found['status']} already; it cannot be decided again")
    now = utcnow()
    status = "approved" if verdict == "approve" else "rejected"
    changed = (await connection.execute(
        update(tool_approvals).where(tool_approvals.c.id == approval_id, tool_approvals.c.status == "pending",
                                     tool_approvals.c.expires_at > now)
        .values(status=status, decided_by=approver.email, decided_at=now, message=message))).rowcount
    if changed != 1:  # decided or expired between the read and the write
        raise Conflict(f"approval {approval_id} was decided or expired meanwhile; see `corral approvals show "
                       f"{approval_id}`")
    await record_change(connection, Event(
        kind=f"approval.{status}", action="tool.call", user_email=approver.email, team=approver.team,
        key_id=approver.key_id, resource=f"{found['server']}/{found['tool']}", decision=verdict,
        attributes={"approval_id": approval_id, "requested_by": found["requested_by"], "message": message}))
    return await get_approval(connection, approval_id)


class Waiters:
    """Held calls wait here; a decision made on this replica wakes its call at once, one made
    on another is seen within POLL_S."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self._events: dict[int, asyncio.Event] = {}

    def wake(self, approval_id: int) -> None:
        event = self._events.get(approval_id)
        if event is not None:
            event.set()

    async def wait(self, approval_id: int, wait_s: float, expire: bool = True) -> str:
        """The approval's final status: approved, rejected or expired (after `wait_s`); with
        `expire=False` it is left pending after `wait_s` (a hook's caller may come back for it)."""
        event = self._events.setdefault(approval_id, asyncio.Event())
        deadline = asyncio.get_running_loop().time() + wait_s
        try:
            while True:
                async with asyncio.timeout(10), self._database.read() as connection:
                    status = (await connection.execute(select(tool_approvals.c.status)
                                                       .where(tool_approvals.c.id == approval_id))).scalar_one()
                if status != "pending":
                    return status
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    return await close_unanswered(self._database, approval_id) if expire else "pending"
                try:
                    async with asyncio.timeout(min(POLL_S, left)):
                        await event.wait()
                except TimeoutError:
                    pass
        finally:
            self._events.pop(approval_id, None)


async def close_unanswered(database: Database, approval_id: int, why: str = "") -> str:
    """Expire an approval nobody decided in time (or whose caller went away, `why`); return its
    final status, which an approver may have set meanwhile."""
    async with asyncio.timeout(10), database.transaction() as connection:
        changed = (await connection.execute(
            update(tool_approvals).where(tool_approvals.c.id == approval_id, tool_approvals.c.status == "pending")
            .values(status="expired", decided_at=utcnow(), message=why))).rowcount
        found = await get_approval(connection, approval_id)
        if changed == 1:
            await record_change(connection, Event(
                kind="approval.expired", action="tool.call", user_email=found["requested_by"],
                resource=f"{found['server']}/{found['tool']}", decision="approve", outcome="expired",
                attributes={"approval_id": approval_id, "why": why or "not decided in time"}))
        return found["status"]
