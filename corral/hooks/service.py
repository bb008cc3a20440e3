"""Answering agents' hooks: a tool about to run is decided by the policy like the action it
stands for, and everything a hook reports (results, prompts, the task starting and ending) is
recorded as task events, so Claude Code and Cline follow the same rules inside the client as at
the gateway.

- A tool use is decided per act (a command line, each path, an MCP tool); the strictest wins.
  A tool Corral does not know gets the policy's `default`.
- `confirm` asks the person where the client can ask (Claude Code's `ask`); Cline's hooks cannot
  ask, so there it is refused with how to get the tool allowed.
- `approve` holds the call for an approver within `clients.hook_wait_s`; the approval stays open
  for `clients.approval_wait_s`, so when the agent tries the same call again it goes through
  once approved (and only once).
- The audit ledger holds every decision on a tool use that could change something (writes,
  commands that are not readers, MCP tools that are not read-only), every refusal, and the
  result of every such tool that ran. An allow of a change is on the ledger before the answer;
  the others are appended without holding the answer up, since nothing happens on Corral's word.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from corral.audit.ledger import AuditLog
from corral.audit.records import AuditRecord, payload_sha256
from corral.errors import Conflict
from corral.events.model import Event, utcnow
from corral.events.recorder import EventRecorder
from corral.gateway.mcp import approvals
from corral.hooks.reading import MAX_TEXT, Act, HookCall, acts_of
from corral.identity.access import Principal
from corral.policy.active import PolicyState
from corral.policy.engine import Decision, EffectivePolicy, Request, Subject, command_class, strictest
from corral.store.database import Database

log = logging.getLogger("corral.hooks")
SOURCE = "hooks"  # ranks below the gateways and OTLP in the metrics: a task they also saw counts once
DB_WAIT_S = 10.0


@dataclass
class Verdict:
    """What a pre-tool hook answers: allow, ask (the client asks its user) or deny, and why."""

    effect: str
    reason: str
    rules: tuple[str, ...] = ()
    approval_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Hooks:
    def __init__(self, policy: PolicyState, recorder: EventRecorder, audit: AuditLog, database: Database,
                 waiters: approvals.Waiters) -> None:
        self._policy = policy
        self._recorder = recorder
        self._audit = audit
        self._database = database
        self._waiters = waiters
        self._appending: set[asyncio.Task[AuditRecord]] = set()  # appends not waited for

    async def fail_open(self) -> bool:
        """Whether the policy lets a tool run when its hook cannot be read."""
        return (await self._policy.current()).compiled.policy.clients.fail_open

    async def handle(self, principal: Principal, call: HookCall) -> Verdict | None:
        """Decide a tool about to run (a Verdict), or record what the hook reports (None)."""
        if call.stage == "pre_tool":
            return await self._pre_tool(principal, call)
        acts = acts_of(call) if call.stage in ("post_tool", "tool_failed") else None
        events = report_events(principal, call, acts)
        for event in events:
            self._recorder.emit(event)
        if call.stage in ("post_tool", "tool_failed") and _changed(await self._policy.current(), acts):
            for event in events:  # a tool that could have changed something ran: its result is ledgered
                self._ledger_soon(AuditRecord(actor=principal.email, action=event.kind, resource=event.resource or "?",
                                              outcome=event.outcome, payload_sha256=payload_sha256(call.tool_input)))
        return None

    def _ledger_soon(self, record: AuditRecord) -> None:
        """Append without waiting for the commit (the group commit writes it within milliseconds)."""
        task = asyncio.create_task(self._audit.append(record))
        self._appending.add(task)
        task.add_done_callback(self._appended)

    def _appended(self, task: asyncio.Task[AuditRecord]) -> None:
        self._appending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("appending a hook's audit record failed: %s", task.exception())

    # ---- a tool about to run -------------------------------------------------------------------

    async def _pre_tool(self, principal: Principal, call: HookCall) -> Verdict:
        effective = await self._policy.current()
        now = utcnow()
        acts = acts_of(call)
        decision = judge(effective, principal, call, acts, now)
        verdict = Verdict(_client_effect(call.client, decision.effect), decision.reason, decision.rules)
        if decision.effect == "confirm" and call.client != "claude-code":
            verdict.reason = (f"{decision.reason}: this needs your confirmation, and {call.client}'s hooks cannot ask "
                              "for it; ask an admin to allow it for you in the policy")
        if decision.effect == "approve":
            verdict = await self._hold(effective, principal, call, acts or [], decision)
        action = acts[0].action if acts else "tool.call"
        if _changed(effective, acts) or verdict.effect != "allow":
            record = AuditRecord(actor=principal.email, action=action,
                                 resource=_resource(call, acts), decision=decision.effect,
                                 outcome={"allow": "allowed", "ask": "asked", "deny": "denied"}[verdict.effect],
                                 payload_sha256=payload_sha256(call.tool_input))
            if verdict.effect == "allow":  # Corral lets a change happen: on the ledger before the answer
                await self._audit.append(record)
            else:  # nothing happens on Corral's word: the answer need not wait for the fsync
                self._ledger_soon(record)
        self._recorder.emit(_event(principal, call, "tool.call", now, action=action,
                                   resource=_resource(call, acts), decision=decision.effect,
                                   outcome={"allow": None, "ask": "asked", "deny": "denied"}[verdict.effect],
                                   attributes={"rules": list(verdict.rules), "reason": verdict.reason[:MAX_TEXT],
                                               "approval_id": verdict.approval_id, "known": acts is not None}))
        return verdict

    async def _hold(self, effective: EffectivePolicy, principal: Principal, call: HookCall, acts: list[Act],
                    decision: Decision) -> Verdict:
        """Hold the call for an approver: within the hook's wait, or until the agent tries again."""
        settings = effective.compiled.policy.clients
        tool, sha = call.tool or "?", payload_sha256(call.tool_input)
        try:
            async with asyncio.timeout(DB_WAIT_S), self._database.transaction() as connection:
                found = await approvals.open_approval(connection, principal.email, call.client, tool, sha,
                                                      utcnow() - timedelta(seconds=settings.approval_wait_s))
                if found is None:
                    found = await approvals.request_approval(
                        connection, principal, server=call.client, tool=tool, tool_class=_tool_class(effective, acts),
                        arguments=call.tool_input, rules=list(decision.rules), reason=decision.reason,
                        task_id=call.task_id, mode=None, wait_s=settings.approval_wait_s,
                        action=acts[0].action if acts else "tool.call")
        except Conflict as error:
            return Verdict("deny", error.message, decision.rules)
        approval_id, status = found["id"], found["status"]
        if status == "pending":
            status = await self._waiters.wait(approval_id, settings.hook_wait_s, expire=False)
        if status == "approved":
            async with asyncio.timeout(DB_WAIT_S), self._database.transaction() as connection:
                if await approvals.use_approval(connection, approval_id):
                    return Verdict("allow", f"approval {approval_id} was given", decision.rules, approval_id)
            status = "used"
        async with asyncio.timeout(DB_WAIT_S), self._database.read() as connection:
            found = await approvals.get_approval(connection, approval_id)
        what = f"approval {approval_id} for this {tool} call"
        if found["status"] == "rejected":
            why = f": {found['message']}" if found["message"] else ""
            return Verdict("deny", f"{what} was rejected by {found['decided_by']}{why}", decision.rules, approval_id)
        if found["status"] == "pending":
            return Verdict("deny", f"{decision.reason}: {what} is waiting for an approver (`corral approvals approve "
                           f"{approval_id}`); once it is approved, try the same call again", decision.rules,
                           approval_id)
        return Verdict("deny", f"{what} is {found['status']}; try the call again to ask for a new approval",
                       decision.rules, approval_id)


def judge(effective: EffectivePolicy, principal: Principal, call: HookCall, acts: list[Act] | None,
          now: datetime) -> Decision:
    """The policy's decision on a tool use: the strictest of its acts'."""
    version = effective.compiled.version
    if acts is None:
        default = effective.compiled.policy.default
        what = f"tool {call.tool!r}" if call.tool else "a tool use that names no tool"
        return Decision(default, ("default",), f"Corral does not know what {what} does, so the policy's default "
                        f"({default}) applies", resource=call.tool or "", policy_version=version)
    if not acts:
        return Decision("allow", (), f"{call.tool} acts on nothing the policy governs", resource=call.tool or "",
                        policy_version=version)
    subject = Subject(principal.email, principal.teams, principal.roles, call.client)
    decisions = [effective.decide(Request(act.action, act.resource, subject, now=now)) for act in acts]
    effect = strictest(*(decision.effect for decision in decisions))
    return next(decision for decision in decisions if decision.effect == effect)


def _client_effect(client: str, effect: str) -> str:
    if effect == "allow":
        return "allow"
    if effect == "confirm" and client == "claude-code":
        return "ask"
    return "deny"  # approve is settled by _hold


def _read_only(effective: EffectivePolicy, act: Act) -> bool:
    if act.action == "file.read":
        return True
    if act.action == "command.exec":
        return command_class(act.resource) == "read-only"
    return act.action == "tool.call" and effective.compiled.tool_class(act.resource, None) == "read-only"


def _changed(effective: EffectivePolicy, acts: list[Act] | None) -> bool:
    """Whether a tool use could change something (unknown ones could): its decision and result
    go on the ledger."""
    return acts is None or not all(_read_only(effective, act) for act in acts)


def _tool_class(effective: EffectivePolicy, acts: list[Act]) -> str:
    if not _changed(effective, acts):
        return "read-only"
    tools = [effective.compiled.tool_class(act.resource, None) for act in acts if act.action == "tool.call"]
    return "destructive" if "destructive" in tools or not acts else "mutating"


def _resource(call: HookCall, acts: list[Act] | None) -> str:
    if acts:
        return "; ".join(act.resource for act in acts)[:MAX_TEXT]
    return (call.tool or "?")[:MAX_TEXT]


# ---- what hooks report ---------------------------------------------------------------------------

_TASK_KINDS = {"task_started": ("task.started", None), "task_resumed": ("task.resumed", None),
               "task_completed": ("task.completed", "ok"), "task_cancelled": ("task.abandoned", "abandoned"),
               "session_ended": ("task.abandoned", "abandoned")}


def report_events(principal: Principal, call: HookCall, acts: list[Act] | None) -> list[Event]:
    """The events a hook's report stands for (docs/events.md); `acts` is what the tool did
    (`acts_of`), for a tool's result."""
    now = utcnow()
    if call.stage in ("post_tool", "tool_failed"):
        outcome = "ok" if call.stage == "post_tool" else _failure(call)
        acts = acts or []
        attributes = {"tool": call.tool, "error": call.error}
        commands = [act for act in acts if act.action == "command.exec"]
        if commands:
            return [_event(principal, call, "command.exec", now, resource=act.resource[:MAX_TEXT], outcome=outcome,
                           attributes=attributes) for act in commands]
        resource = next((act.resource for act in acts if act.action == "tool.call"), call.tool or "?")
        if "/" in resource and (call.tool or "").startswith(("mcp__", "use_mcp_tool", "access_mcp_resource")):
            server, _, tool = resource.partition("/")
            attributes.update(server=server, tool=tool)
        path = next((act.resource for act in acts if act.action.startswith("file.")), None)
        return [_event(principal, call, "tool.result", now, resource=resource[:MAX_TEXT], outcome=outcome,
                       attributes={**attributes, "path": path})]
    if call.stage == "prompt":
        return [_event(principal, call, "user.prompt", now)]
    if call.stage in _TASK_KINDS:
        kind, outcome = _TASK_KINDS[call.stage]
        return [_event(principal, call, kind, now, outcome=outcome)]
    return [_event(principal, call, "agent.message", now, attributes={"type": call.hook})]


def _failure(call: HookCall) -> str:
    error = (call.error or "").lower()
    return "timeout" if "timed out" in error or "timeout" in error else "error"


def _event(principal: Principal, call: HookCall, kind: str, time: datetime, **fields: Any) -> Event:
    attributes = {"hook": call.hook, "tool_use_id": call.tool_use_id, **call.details, **fields.pop("attributes", {})}
    return Event(kind=kind, user_email=principal.email, team=principal.team, key_id=principal.key_id,
                 client=call.client, task_id=call.task_id, duration_ms=call.duration_ms, time=time, source=SOURCE,
                 attributes={name: value for name, value in attributes.items() if value is not None}, **fields)
