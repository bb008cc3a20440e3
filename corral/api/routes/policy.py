"""REST routes for policy: the active policy and its versions (the approval chain), overrides,
and `/decide`. Reading needs `read`; changing needs a `policy`-scoped key (or `admin`) of a
person the chain admits; deciding needs `gateway` or `read`."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import Field

from corral.api.auth import authenticate
from corral.api.bodies import Strict
from corral.errors import Forbidden, InvalidRequest, Unavailable
from corral.events.model import Event, utcnow
from corral.identity import directory
from corral.identity.access import Principal, scope_allows
from corral.policy import overrides, versions
from corral.policy.commands import CACHED_LINE_CHARS
from corral.policy.engine import Decision, EffectivePolicy, Request as DecisionRequest, Subject, Trace
from corral.policy.overrides import MAX_TTL, Override
from corral.policy.schema import ACTIONS
from corral.policy.versions import Version

router = APIRouter(tags=["policy"])
Caller = Annotated[Principal, Depends(authenticate)]
VersionId = Annotated[int, Path(ge=1, le=2**31 - 1)]
CHANGERS = ("admin", "approver")  # who may propose, restore and activate
RESPONDERS = ("admin", "sre")  # who may add and remove overrides
DECIDE_TIMEOUT_S = 10.0


class ProposalIn(Strict):
    document: str = Field(min_length=1, max_length=versions.MAX_DOCUMENT_BYTES)
    message: str = Field(min_length=1, max_length=2000)


class VerdictIn(Strict):
    comment: str = Field("", max_length=2000)


class ActivateIn(Strict):
    emergency: bool = False
    message: str = Field("", max_length=2000)


class RestoreIn(Strict):
    message: str = Field("", max_length=2000)


class OverrideIn(Strict):
    kind: str = Field(min_length=1, max_length=32)
    target: str = Field(min_length=1, max_length=320)
    ttl_seconds: int = Field(ge=60, le=int(MAX_TTL.total_seconds()))
    reason: str = Field(min_length=1, max_length=2000)
    params: dict[str, Any] = Field(default_factory=dict, max_length=10)


class TaskIn(Strict):
    requests: int | None = Field(None, ge=0)
    cost_usd: float | None = Field(None, ge=0)


class DecideIn(Strict):
    action: str = Field(description=f"one of {', '.join(ACTIONS)}")
    resource: str = Field(min_length=1, max_length=16 * 1024)
    user: str | None = Field(None, max_length=320, description="decide as this user (admins and auditors)")
    mode: str | None = Field(None, max_length=64)
    client: str | None = Field(None, max_length=50)
    tool_annotations: dict[str, Any] | None = Field(None, max_length=20)
    task: TaskIn | None = None
    explain: bool = False


def _version(version: Version, **extra: Any) -> dict[str, Any]:
    return {"version": version.id, "status": version.status, "message": version.message,
            "author": version.author_email, "base_version": version.base_version, "rollback_of": version.rollback_of,
            "sha256": version.sha256, "created_at": version.created_at.isoformat(),
            "activated_at": version.activated_at.isoformat() if version.activated_at else None,
            "activated_by": version.activated_by, "emergency": version.emergency, **extra}


def _override(override: Override) -> dict[str, Any]:
    now = utcnow()
    status = "removed" if override.removed_at else ("active" if override.active(now) else "expired")
    return {"id": override.id, "kind": override.kind, "target": override.target, "params": override.params,
            "reason": override.reason, "created_by": override.created_by, "status": status,
            "created_at": override.created_at.isoformat() if override.created_at else None,
            "expires_at": override.expires_at.isoformat(),
            "removed_at": override.removed_at.isoformat() if override.removed_at else None}


def _state(request: Request):  # noqa: ANN202 - the app's Corral
    return request.app.state.corral


@router.get("/policy")
async def active_policy(request: Request, caller: Caller) -> dict[str, Any]:
    """The active policy version and its document."""
    caller.require("read")
    async with _state(request).database.read() as connection:
        version = await versions.active_version(connection)
        if version is None:
            raise InvalidRequest("no policy is active")
        status = await versions.status_of(connection, version)
    return _version(version, document=version.document, **status)


@router.get("/policy/versions")
async def history(request: Request, caller: Caller,
                  limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
    """Every version, newest first: proposals, the active one, retired and rejected ones."""
    caller.require("read")
    async with _state(request).database.read() as connection:
        found = await versions.list_versions(connection, limit)
        return {"versions": [_version(v, **await versions.status_of(connection, v)) for v in found]}


@router.get("/policy/versions/{version_id}")
async def show_version(request: Request, version_id: VersionId, caller: Caller) -> dict[str, Any]:
    """One version: its document, verdicts, diff against the version it was proposed on, and
    what it still needs."""
    caller.require("read")
    async with _state(request).database.read() as connection:
        version = await versions.get_version(connection, version_id)
        base = await versions.get_version(connection, version.base_version) if version.base_version else None
        diff = versions.unified_diff(base.document if base else "", version.document,
                                     f"v{base.id}" if base else "(none)", f"v{version.id}")
        return _version(version, document=version.document, diff=diff,
                        verdicts=await versions.verdicts(connection, version_id),
                        **await versions.status_of(connection, version))


@router.get("/policy/diff")
async def diff(request: Request, caller: Caller, from_version: Annotated[int, Query(alias="from", ge=1, le=2**31 - 1)],
               to_version: Annotated[int, Query(alias="to", ge=1, le=2**31 - 1)]) -> dict[str, Any]:
    """A unified diff between two versions' documents."""
    caller.require("read")
    async with _state(request).database.read() as connection:
        a = await versions.get_version(connection, from_version)
        b = await versions.get_version(connection, to_version)
    return {"from": a.id, "to": b.id, "diff": versions.unified_diff(a.document, b.document, f"v{a.id}", f"v{b.id}")}


@router.post("/policy/versions", status_code=201)
async def propose(request: Request, body: ProposalIn, caller: Caller) -> dict[str, Any]:
    """Propose a new policy; it becomes active only through the approval chain."""
    caller.require("policy", *CHANGERS)
    async with _state(request).database.transaction() as connection:
        version = await versions.propose(connection, caller, body.document, body.message)
        return _version(version, **await versions.status_of(connection, version))


@router.post("/policy/versions/{version_id}/restore", status_code=201)
async def restore(request: Request, version_id: VersionId, caller: Caller, body: RestoreIn | None = None) -> dict[str, Any]:
    """Rollback: propose an earlier version's document again, through the same chain."""
    caller.require("policy", *CHANGERS)
    async with _state(request).database.transaction() as connection:
        version = await versions.restore(connection, caller, version_id, (body or RestoreIn()).message)
        return _version(version, **await versions.status_of(connection, version))


@router.post("/policy/versions/{version_id}/approve")
async def approve(request: Request, version_id: VersionId, caller: Caller, body: VerdictIn | None = None) -> dict[str, Any]:
    """Approve a proposal (or review an emergency activation after the fact)."""
    caller.require("policy")
    async with _state(request).database.transaction() as connection:
        version = await versions.approve(connection, caller, version_id, (body or VerdictIn()).comment)
        return _version(version, **await versions.status_of(connection, version))


@router.post("/policy/versions/{version_id}/reject")
async def reject(request: Request, version_id: VersionId, body: VerdictIn, caller: Caller) -> dict[str, Any]:
    """Reject a proposal (its author may withdraw it the same way)."""
    caller.require("policy")
    async with _state(request).database.transaction() as connection:
        return _version(await versions.reject(connection, caller, version_id, body.comment))


@router.post("/policy/versions/{version_id}/activate")
async def activate(request: Request, version_id: VersionId, caller: Caller, body: ActivateIn | None = None) -> dict[str, Any]:
    """Make a proposal the active policy once its approvals are met; `emergency` (admins) skips
    them and flags the version until two approvers review it."""
    body = body or ActivateIn()
    caller.require("admin" if body.emergency else "policy", *CHANGERS)
    corral = _state(request)
    async with corral.database.transaction() as connection:
        version = await versions.activate(connection, caller, version_id, body.emergency, body.message)
        status = await versions.status_of(connection, version)
    corral.policy.invalidate()
    return _version(version, **status)


# ---- overrides --------------------------------------------------------------------------------


@router.get("/overrides")
async def list_overrides(request: Request, caller: Caller,
                         include_ended: Annotated[bool, Query(description="also expired and removed ones")] = False,
                         ) -> dict[str, Any]:
    caller.require("read")
    async with _state(request).database.read() as connection:
        return {"overrides": [_override(o) for o in await overrides.list_overrides(connection, include_ended)]}


@router.post("/overrides", status_code=201)
async def add_override(request: Request, body: OverrideIn, caller: Caller) -> dict[str, Any]:
    """Add a time-boxed override: it can only make decisions stricter or reroute a profile."""
    caller.require("policy", *RESPONDERS)
    corral = _state(request)
    effective = await corral.policy.current()
    async with corral.database.transaction() as connection:
        override = await overrides.add_override(connection, caller, effective.compiled.policy, body.kind, body.target,
                                                timedelta(seconds=body.ttl_seconds), body.reason, body.params)
    corral.policy.invalidate()
    return _override(override)


@router.delete("/overrides/{override_id}")
async def remove_override(request: Request, override_id: VersionId, caller: Caller) -> dict[str, Any]:
    caller.require("policy", *RESPONDERS)
    corral = _state(request)
    async with corral.database.transaction() as connection:
        override = await overrides.remove_override(connection, caller, override_id)
    corral.policy.invalidate()
    return _override(override)


# ---- deciding ---------------------------------------------------------------------------------


async def _decided(effective: EffectivePolicy, asked: DecisionRequest, explain: bool
                   ) -> tuple[Decision, list[Trace] | None]:
    """Decide; a long command line is parsed off the event loop, so it cannot stall others."""
    def work() -> tuple[Decision, list[Trace] | None]:
        return effective.explain(asked) if explain else (effective.decide(asked), None)

    if len(asked.resource) <= CACHED_LINE_CHARS:
        return work()
    try:
        async with asyncio.timeout(DECIDE_TIMEOUT_S):
            return await asyncio.to_thread(work)
    except TimeoutError:
        raise Unavailable("deciding took too long; try again, or split the command line") from None


def _trace(line: Trace) -> dict[str, Any]:
    return {"rule": line.rule, "effect": line.effect, "matched": line.matched, "why": line.why}


@router.post("/decide")
async def decide(request: Request, body: DecideIn, caller: Caller) -> dict[str, Any]:
    """Decide an action as the caller (or, for admins and auditors, as another user)."""
    if not scope_allows(caller.scopes, "read"):
        caller.require("gateway")  # agents' hooks decide with their gateway keys
    if body.action not in ACTIONS:
        raise InvalidRequest(f"unknown action {body.action!r}; actions are {', '.join(ACTIONS)}")
    corral = _state(request)
    subject = Subject(caller.email, caller.teams, caller.roles, body.client)
    if body.user is not None and directory.normalise_email(body.user) != caller.email:
        if not caller.roles.intersection({"admin", "auditor"}):
            raise Forbidden("only admins and auditors may decide as another user")
        async with corral.database.read() as connection:
            user = await directory.get_user(connection, body.user)
        subject = Subject(user.email, user.teams, frozenset(user.roles), body.client)
    effective = await corral.policy.current()
    asked = DecisionRequest(action=body.action, resource=body.resource, subject=subject, mode=body.mode,
                            tool_annotations=body.tool_annotations,
                            task_requests=body.task.requests if body.task else None,
                            task_cost_usd=body.task.cost_usd if body.task else None, now=utcnow())
    decision, trace = await _decided(effective, asked, body.explain)
    answer = decision.as_dict()
    if trace is not None:
        answer["trace"] = [_trace(line) for line in trace]
    corral.recorder.emit(Event(
        kind="policy.decided", action=body.action, user_email=subject.email, team=subject.teams[0] if subject.teams else None,
        key_id=caller.key_id, client=body.client, mode=body.mode, resource=body.resource[:2000],
        decision=decision.effect, outcome="decided",
        attributes={"rules": list(decision.rules), "policy_version": decision.policy_version,
                    **({"asked_by": caller.email} if subject.email != caller.email else {})}))
    return answer
