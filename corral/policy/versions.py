"""The approval chain: the only way the active policy changes. A proposal is a numbered version
with its author and message; approvers approve or reject it; it becomes active only when the
active policy's `approvals:` are met (sections included, approvers distinct, the author
excluded unless allowed). Break-glass activation exists for admins and stays flagged until two
approvers review it. Every step records a `policy.*` event in the same transaction.

`missing_approvals()` is the rule itself, pure; the rest stores and loads.
"""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from corral.audit.ledger import record_change
from corral.errors import Conflict, Forbidden, InvalidRequest, NotFound
from corral.events.model import Event, utcnow
from corral.identity.access import Principal
from corral.policy.schema import SECTIONS, Approvals, Policy, PolicyError, load_policy
from corral.store.tables import policy_approvals, policy_versions, team_members, teams, user_roles, users

EMERGENCY_REVIEWS = 2
MAX_DOCUMENT_BYTES = 1024 * 1024


# ---- the rule (pure) --------------------------------------------------------------------------


@dataclass(frozen=True)
class Approver:
    email: str
    roles: frozenset[str]
    teams: tuple[str, ...]
    disabled: bool = False


def admits(selector: str, person: Approver) -> bool:
    kind, _, name = selector.partition(":")
    if kind == "role":
        return name in person.roles
    if kind == "team":
        return name in person.teams
    return kind == "user" and name.lower() == person.email


def changed_sections(before: Policy | None, after: Policy) -> list[str]:
    if before is None:
        return list(SECTIONS)
    old, new = before.model_dump(), after.model_dump()
    return [section for section in SECTIONS if old[section] != new[section]]


def missing_approvals(rules: Approvals, changed: list[str], author: str, approvers: list[Approver]) -> list[str]:
    """What is still needed before a proposal may be activated; empty when nothing is."""
    eligible = [a for a in approvers if not a.disabled and (rules.author_may_approve or a.email != author)]
    needs = [("the policy", rules.required, rules.approvers)]
    needs += [(f"the {section} section", rule.required, rule.approvers)
              for section, rule in rules.sections.items() if section in changed]
    missing = []
    for label, required, selectors in needs:
        count = len({a.email for a in eligible if any(admits(s, a) for s in selectors)})
        if count < required:
            missing.append(f"{label} needs {required} approvals from {' or '.join(selectors)}; it has {count}")
    return missing


def may_approve(rules: Approvals, person: Approver) -> bool:
    selectors = [*rules.approvers, *(s for rule in rules.sections.values() for s in rule.approvers)]
    return any(admits(selector, person) for selector in selectors)


def unified_diff(before: str, after: str, before_name: str, after_name: str) -> str:
    return "".join(difflib.unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True),
                                        before_name, after_name))


# ---- storage --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Version:
    id: int
    document: str
    sha256: str
    status: str
    message: str
    author_email: str
    base_version: int | None
    rollback_of: int | None
    created_at: datetime
    activated_at: datetime | None
    activated_by: str | None
    emergency: bool
    closed_at: datetime | None

    @property
    def policy(self) -> Policy:
        return _parsed(self.document, self.id)


@lru_cache(maxsize=64)
def _parsed(document: str, version_id: int) -> Policy:
    """A stored version's policy, parsed once: the chain looks at the same few versions often."""
    return load_policy(document, f"v{version_id}")


def _version(row: Any) -> Version:
    return Version(**{name: getattr(row, name) for name in Version.__dataclass_fields__})


_ACTIONS = {"policy.proposed": "policy.propose", "policy.approved": "policy.approve",
            "policy.rejected": "policy.reject", "policy.activated": "policy.activate",
            "policy.emergency_reviewed": "policy.review"}


async def _event(connection: AsyncConnection, actor: Principal | None, kind: str, version: int,
                 **attributes: object) -> None:
    await record_change(connection, Event(
        kind=kind, action=_ACTIONS[kind], user_email=actor.email if actor else "corral", team=actor.team if actor else None,
        key_id=actor.key_id if actor else None, client="corral-api" if actor else "corral",
        resource=f"policy:v{version}", decision="allow", outcome="ok", attributes=dict(attributes)))


async def active_version(connection: AsyncConnection) -> Version | None:
    row = (await connection.execute(select(policy_versions).where(policy_versions.c.status == "active"))).first()
    return _version(row) if row else None


async def get_version(connection: AsyncConnection, version_id: int, for_update: bool = False) -> Version:
    query = select(policy_versions).where(policy_versions.c.id == version_id)
    row = (await connection.execute(query.with_for_update() if for_update else query)).first()
    if row is None:
        raise NotFound(f"no policy version {version_id}; `corral policy history` lists them")
    return _version(row)


async def list_versions(connection: AsyncConnection, limit: int = 100) -> list[Version]:
    rows = await connection.execute(select(policy_versions).order_by(policy_versions.c.id.desc()).limit(limit))
    return [_version(row) for row in rows]


async def verdicts(connection: AsyncConnection, version_id: int) -> list[dict[str, Any]]:
    rows = await connection.execute(select(policy_approvals).where(policy_approvals.c.version_id == version_id)
                                    .order_by(policy_approvals.c.id))
    return [{"email": r.email, "verdict": r.verdict, "comment": r.comment, "at": r.created_at.isoformat()}
            for r in rows]


def _parse(document: str, source: str) -> Policy:
    if len(document.encode()) > MAX_DOCUMENT_BYTES:
        raise InvalidRequest("a policy document is at most 1 MiB")
    try:
        return load_policy(document, source)
    except PolicyError as error:
        raise InvalidRequest("the policy is not valid:\n" + "\n".join(error.lines())) from None


async def install_first(connection: AsyncConnection, document: str, source: str) -> Version | None:
    """Make `document` the active policy if there has never been one (first start)."""
    if (await connection.execute(select(func.count()).select_from(policy_versions))).scalar_one():
        return None
    load_policy(document, source)  # a bad first policy is a configuration error, raised as is
    version = await _insert(connection, "corral", document, f"first policy, from {source}", None, None,
                            status="active")
    await connection.execute(update(policy_versions).where(policy_versions.c.id == version)
                             .values(activated_at=utcnow(), activated_by="corral"))
    await _event(connection, None, "policy.activated", version, source=source, first=True)
    return await get_version(connection, version)


async def _insert(connection: AsyncConnection, author: str, document: str, message: str, base: int | None,
                  rollback_of: int | None, status: str = "proposed") -> int:
    result = await connection.execute(insert(policy_versions).values(
        document=document, sha256=hashlib.sha256(document.encode()).hexdigest(), status=status, message=message,
        author_email=author, base_version=base, rollback_of=rollback_of, created_at=utcnow(), emergency=False))
    return result.inserted_primary_key[0]


async def propose(connection: AsyncConnection, actor: Principal, document: str, message: str,
                  rollback_of: int | None = None) -> Version:
    if not message.strip():
        raise InvalidRequest("say why with -m: the message is part of the record")
    policy = _parse(document, "proposal")
    active = await active_version(connection)
    if active is not None and active.document == document:
        raise Conflict(f"this is the active policy (v{active.id}) already; nothing to propose")
    version = await _insert(connection, actor.email, document, message.strip(), active.id if active else None,
                            rollback_of)
    changed = changed_sections(active.policy if active else None, policy)
    await _event(connection, actor, "policy.proposed", version, base=active.id if active else None,
                 sections=changed, message=message.strip(), rollback_of=rollback_of)
    return await get_version(connection, version)


async def restore(connection: AsyncConnection, actor: Principal, version_id: int, message: str) -> Version:
    """Rollback: a new proposal whose document is an earlier version's, through the same chain."""
    old = await get_version(connection, version_id)
    if old.activated_at is None:
        raise Conflict(f"v{version_id} was never active; only a version that was in force can be rolled back to")
    reason = f"rollback to v{version_id}" + (f": {message.strip()}" if message.strip() else "")
    return await propose(connection, actor, old.document, reason, rollback_of=version_id)


async def approvers_of(connection: AsyncConnection, emails: list[str], policy: Policy) -> list[Approver]:
    """People as the approval rules see them now: directory roles plus the roles the policy
    gives their teams. A role revoked since they approved no longer counts."""
    if not emails:
        return []
    rows = list(await connection.execute(select(users.c.id, users.c.email, users.c.disabled_at)
                                         .where(users.c.email.in_(emails))))
    ids = [row.id for row in rows]
    roles: dict[int, set[str]] = {}
    member_of: dict[int, list[str]] = {}
    for row in await connection.execute(select(user_roles).where(user_roles.c.user_id.in_(ids))):
        roles.setdefault(row.user_id, set()).add(row.role)
    for row in await connection.execute(select(team_members.c.user_id, teams.c.name)
                                        .join(teams, teams.c.id == team_members.c.team_id)
                                        .where(team_members.c.user_id.in_(ids))):
        member_of.setdefault(row.user_id, []).append(row.name)
        roles.setdefault(row.user_id, set()).update(policy.teams[row.name].roles if row.name in policy.teams else ())
    return [Approver(email=row.email, roles=frozenset(roles.get(row.id, ())), teams=tuple(member_of.get(row.id, ())),
                     disabled=row.disabled_at is not None) for row in rows]


async def status_of(connection: AsyncConnection, version: Version) -> dict[str, Any]:
    """Where a version stands in the chain: what is missing before it can be activated, or how
    many reviews an emergency activation still needs."""
    if version.status == "proposed":
        active = await active_version(connection)
        rules = active.policy.approvals if active else Approvals()
        given = await verdicts(connection, version.id)
        approving = [v["email"] for v in given if v["verdict"] == "approve"]
        people = await approvers_of(connection, approving, active.policy) if active else []
        base = await get_version(connection, version.base_version) if version.base_version else None
        changed = changed_sections(base.policy if base else None, version.policy)
        return {"changed_sections": changed,
                "missing": missing_approvals(rules, changed, version.author_email, people)}
    if version.emergency:
        given = await verdicts(connection, version.id)
        replaced = await _replaced_by_emergency(connection, version)
        judging = replaced.policy if replaced else version.policy
        reviewers = await approvers_of(connection, [v["email"] for v in given if v["verdict"] == "review"], judging)
        counted = [p for p in reviewers if _may_review(judging.approvals, p, version)]
        return {"reviews": len(counted), "reviews_needed": max(0, EMERGENCY_REVIEWS - len(counted))}
    return {}


def _may_review(rules: Approvals, person: Approver, version: Version) -> bool:
    """Who may review an emergency activation: an approver other than the one who activated
    it, and other than its author unless authors may approve."""
    return (not person.disabled and may_approve(rules, person) and person.email != version.activated_by
            and (rules.author_may_approve or person.email != version.author_email))


async def approve(connection: AsyncConnection, actor: Principal, version_id: int, comment: str) -> Version:
    version = await get_version(connection, version_id)
    active = await active_version(connection)
    if version.status == "active" and version.emergency:
        active = await _replaced_by_emergency(connection, version)  # its own rules don't judge it
    rules = active.policy.approvals if active else Approvals()
    me = (await approvers_of(connection, [actor.email], active.policy if active else version.policy))[0]
    if not may_approve(rules, me):
        raise Forbidden(f"only {' or '.join(rules.approvers)} may approve policy changes")
    if version.status == "active" and version.emergency:
        if not _may_review(rules, me, version):
            raise Forbidden("an emergency change is reviewed by approvers other than the person who activated it "
                            "and its author")
        return await _verdict(connection, actor, version, "review", comment, "policy.emergency_reviewed")
    if version.status != "proposed":
        raise Conflict(f"v{version_id} is {version.status}; only a proposal can be approved")
    if actor.email == version.author_email and not rules.author_may_approve:
        raise Forbidden("the author of a proposal cannot approve it (approvals.author_may_approve is false)")
    return await _verdict(connection, actor, version, "approve", comment, "policy.approved")


async def _replaced_by_emergency(connection: AsyncConnection, version: Version) -> Version | None:
    row = (await connection.execute(
        select(policy_versions).where(policy_versions.c.activated_at.is_not(None), policy_versions.c.id != version.id,
                                      policy_versions.c.activated_at <= version.activated_at)
        .order_by(policy_versions.c.activated_at.desc()).limit(1))).first()
    return _version(row) if row else None


async def reject(connection: AsyncConnection, actor: Principal, version_id: int, comment: str) -> Version:
    version = await get_version(connection, version_id, for_update=True)
    if version.status != "proposed":
        raise Conflict(f"v{version_id} is {version.status}; only a proposal can be rejected")
    if not comment.strip():
        raise InvalidRequest("say why with -m: the author needs to know")
    active = await active_version(connection)
    if actor.email != version.author_email:  # authors may withdraw their own proposals
        me = (await approvers_of(connection, [actor.email], active.policy if active else version.policy))[0]
        if not may_approve(active.policy.approvals if active else Approvals(), me):
            raise Forbidden("only approvers (or the author) may reject a proposal")
    await _verdict(connection, actor, version, "reject", comment, "policy.rejected")
    await connection.execute(update(policy_versions).where(policy_versions.c.id == version_id)
                             .values(status="rejected", closed_at=utcnow()))
    return await get_version(connection, version_id)


async def _verdict(connection: AsyncConnection, actor: Principal, version: Version, verdict: str, comment: str,
                   kind: str) -> Version:
    try:
        async with connection.begin_nested():
            await connection.execute(insert(policy_approvals).values(
                version_id=version.id, user_id=actor.user_id, email=actor.email, verdict=verdict,
                comment=comment.strip(), created_at=utcnow()))
    except IntegrityError:
        raise Conflict(f"you have already given your verdict on v{version.id}; approvers must be distinct") from None
    await _event(connection, actor, kind, version.id, verdict=verdict, comment=comment.strip())
    return version


async def activate(connection: AsyncConnection, actor: Principal, version_id: int, emergency: bool = False,
                   message: str = "") -> Version:
    version = await get_version(connection, version_id, for_update=True)  # a reject waits for us, or we for it
    if version.status != "proposed":
        raise Conflict(f"v{version_id} is {version.status}; only a proposal can be activated")
    active = await active_version(connection)
    if emergency:
        if "admin" not in actor.roles or "admin" not in actor.scopes:
            raise Forbidden("emergency activation needs an administrator with an admin-scoped key")
        if not message.strip():
            raise InvalidRequest("say why with -m: an emergency activation is reviewed after the fact")
    else:
        if active is not None and version.base_version != active.id:
            raise Conflict(f"v{active.id} became active after v{version_id} was proposed against "
                           f"v{version.base_version}; propose the change again against v{active.id}")
        status = await status_of(connection, version)
        if status["missing"]:
            raise Conflict(f"v{version_id} cannot be activated yet: {'; '.join(status['missing'])}")
    now = utcnow()
    if active is not None:
        await connection.execute(update(policy_versions).where(policy_versions.c.id == active.id)
                                 .values(status="retired", closed_at=now))
    try:
        async with connection.begin_nested():
            changed = await connection.execute(
                update(policy_versions).where(policy_versions.c.id == version_id, policy_versions.c.status == "proposed")
                .values(status="active", activated_at=now, activated_by=actor.email, emergency=emergency))
    except IntegrityError:
        raise Conflict("another policy version was activated at the same moment; try again") from None
    if changed.rowcount != 1:  # rejected meanwhile: raising rolls the retirement back too
        raise Conflict(f"v{version_id} changed while it was being activated; look at `corral policy history`")
    await _event(connection, actor, "policy.activated", version_id, previous=active.id if active else None,
                 emergency=emergency, message=message.strip() or version.message)
    return await get_version(connection, version_id)
