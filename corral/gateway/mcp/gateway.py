"""The MCP gateway: agents list Corral as their one MCP server (`/mcp` for every server, tool
names `server__tool`; `/mcp/{server}` for one), and Corral decides every tool they see and
every call they make, then forwards to the real server (corral/gateway/mcp/upstreams.py).

Served with the official SDK's Streamable HTTP transport, so every protocol revision it speaks
works (2025-06-18 and 2025-11-25 with sessions, 2026-07-28 without). A call goes through, in
order: the tool's contract (a changed pinned tool is quarantined), the policy decision
(`tool.call`, with the tool's class), a person when the decision asks for one (`confirm`: the
acting user, through elicitation; `approve`: an approver, while the call is held, after which
the call is decided again), the server's circuit breaker, the audit ledger before a mutating
call is forwarded, the call itself (bounded, retried only when safe), and the ledger again with
its outcome. Every call is a `tool.call` event with its error category. Resources and prompts
pass through the same mode, override and breaker checks.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import mcp_types as types
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from mcp import Client, MCPError
from mcp.server.lowlevel.server import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from sqlalchemy.exc import IntegrityError

from corral.audit.ledger import AuditLog, record_change
from corral.audit.records import AuditRecord, payload_sha256
from corral.errors import Conflict
from corral.events.model import Event, utcnow
from corral.events.recorder import EventRecorder
from corral.gateway.clients import client_of
from corral.gateway.llm.health import health_for
from corral.gateway.mcp import approvals, contracts
from corral.gateway.mcp.consent import Seal
from corral.gateway.mcp.upstreams import StdioSlots, Upstream, UpstreamError
from corral.identity.access import Principal
from corral.policy.active import PolicyState
from corral.policy.engine import Decision, EffectivePolicy, Request, Subject
from corral.policy.schema import McpServer
from corral.store.database import Database

log = logging.getLogger("corral.mcp")
T = TypeVar("T")
SEPARATOR = "__"  # `/mcp` names a tool `server__tool`
MAX_ARGUMENT_BYTES = 1_000_000
# JSON-RPC error codes: MCP leaves -32000..-32019 to implementations; each error's `data`
# carries its `category` (and the `rule`, `approval_id` where there is one).
DENIED, UNAVAILABLE, UPSTREAM_FAILED = -32010, -32011, -32012
FAILURES = ("timeout", "unavailable", "protocol_error")  # what counts against a server's health
CONFIRM_KEY = "corral-confirm"
CONFIRM_WAIT_S = 300.0  # for a person to answer a confirmation
MAX_MODE_CHARS, MAX_TASK_CHARS = 64, 200


@dataclass(frozen=True)
class Caller:
    """Who is calling, from the HTTP request that carries the message."""

    principal: Principal
    server: str | None  # /mcp/{server}; None on /mcp
    mode: str | None
    client: str
    task_id: str | None
    refusals_as_results: bool  # the client wants refusals as `isError` tool results

    @property
    def subject(self) -> Subject:
        p = self.principal
        return Subject(p.email, p.teams, p.roles, self.client)


def caller_of(ctx: Any) -> Caller:
    request = ctx.request
    principal = request.scope.get("corral.principal") if request is not None else None
    if principal is None:  # the endpoint authenticates every message; this is never reached otherwise
        raise MCPError(DENIED, "not authenticated")
    headers = request.headers
    return Caller(principal=principal, server=request.scope.get("corral.mcp_server"),
                  mode=(headers.get("x-corral-mode") or "")[:MAX_MODE_CHARS] or None, client=client_of(headers),
                  task_id=(headers.get("x-corral-task") or "")[:MAX_TASK_CHARS] or None,
                  refusals_as_results=headers.get("x-corral-refusals", "").lower() == "tool-result")


class Refused(Exception):
    """A call that is not forwarded: rendered as a JSON-RPC error, or as an `isError` tool result
    for clients that ask for that."""

    def __init__(self, code: int, category: str, message: str, **data: Any) -> None:
        super().__init__(message)
        self.code, self.category, self.message = code, category, message
        self.data = {"category": category, **{k: v for k, v in data.items() if v is not None}}


class McpGateway:
    def __init__(self, policy: PolicyState, recorder: EventRecorder, audit: AuditLog, database: Database,
                 counters: object, max_stdio: int, seal_key: Ed25519PrivateKey, tools_ttl_s: float = 10.0) -> None:
        self._policy = policy
        self._recorder = recorder
        self._audit = audit
        self._database = database
        self._health = health_for(counters)
        self._seal = Seal(seal_key, CONFIRM_WAIT_S)
        self.slots = StdioSlots(max_stdio)
        self._tools_ttl = tools_ttl_s
        self.upstreams: dict[str, Upstream] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self.pins = contracts.Pins()
        self.waiters = approvals.Waiters(database)
        self._reported: set[tuple[str, str, str]] = set()  # (server, tool, hash) contract changes recorded here
        self.disabled: set[str] = set()  # servers this process has reported as cooling down
        # server -> (the tool list judged, the pins' generation, learn?, the judgement)
        self._judged: dict[str, tuple[list[types.Tool], int, bool, contracts.Judged]] = {}
        self._resources: dict[str, str | None] = {}  # uri -> the server listing it (None: several do), for /mcp
        # get_tool_input_schema: the 2026-07-28 transport would otherwise run a whole tools/list
        # (every server) before each call to check Mcp-Param headers, which Corral does not use.
        server = Server("corral", version="0.1.0", instructions="Corral: MCP tools, governed.",
                        get_tool_input_schema=lambda name: None,
                        on_list_tools=self._list_tools, on_call_tool=self._call_tool,
                        on_list_resources=self._list_resources, on_read_resource=self._read_resource,
                        on_list_resource_templates=self._list_resource_templates,
                        on_list_prompts=self._list_prompts, on_get_prompt=self._get_prompt)
        server.middleware = []  # no tracing span per message: events are Corral's record
        self.manager = StreamableHTTPSessionManager(server, session_idle_timeout=1800, max_sessions=10_000)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with self.manager.run():
            try:
                yield
            finally:
                await asyncio.gather(*(upstream.close() for upstream in self.upstreams.values()),
                                     return_exceptions=True)

    # ---- servers and their tools ---------------------------------------------------------

    def upstream(self, name: str, effective: EffectivePolicy) -> Upstream:
        """The connection to a server as the current policy configures it: made anew when its
        settings changed; servers gone from the policy are closed."""
        servers = effective.compiled.policy.mcp_servers
        for gone in [known for known in self.upstreams if known not in servers]:
            self._close_later(self.upstreams.pop(gone))
        config = servers[name]
        found = self.upstreams.get(name)
        if found is None or found.config != config:
            if found is not None:
                self._close_later(found)
            found = self.upstreams[name] = Upstream(name, config, self.slots, self._tools_ttl)
        return found

    def _close_later(self, upstream: Upstream) -> None:
        task = asyncio.get_running_loop().create_task(upstream.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def tools_of(self, name: str, effective: EffectivePolicy, refresh: bool = False) -> contracts.Judged:
        """A server's tools judged against their pins (learning new ones on `learn` servers)."""
        config = effective.compiled.policy.mcp_servers[name]
        tools = await self.upstream(name, effective).tools(refresh)
        if self.pins.stale():
            async with asyncio.timeout(10), self._database.read() as connection:
                await self.pins.load(connection)
        learn = config.pinning == "learn"
        cached = self._judged.get(name)
        if cached is not None and cached[0] is tools and cached[1:3] == (self.pins.generation, learn):
            return cached[3]  # the same list and the same pins: judged already (hashing every tool costs)
        judged = contracts.judge(tools, self.pins.of(name), learn=learn)
        if judged.learned:
            await self._learn(name, [tool for tool, _ in judged.learned])  # new pins: judged afresh next time
        for tool, pinned in judged.quarantined:
            await self._contract_changed(name, tool, pinned)
        self._judged[name] = (tools, self.pins.generation, learn, judged)  # once every change is recorded
        return judged

    async def _learn(self, server: str, tools: list[types.Tool]) -> None:
        try:
            async with asyncio.timeout(10), self._database.transaction() as connection:
                await contracts.pin(connection, server, tools, by="corral (learn)", only_new=True)
        except IntegrityError:  # another replica learned them first: its pins count
            pass
        self.pins.forget()

    async def _contract_changed(self, server: str, tool: types.Tool, pinned: str) -> None:
        digest = contracts.fingerprint(tool)
        if (server, tool.name, digest) in self._reported:
            return
        async with asyncio.timeout(10), self._database.transaction() as connection:
            await record_change(connection, Event(
                kind="tool.contract_changed", action="tool.call", resource=f"{server}/{tool.name}",
                decision="deny", outcome="quarantined",
                attributes={"server": server, "tool": tool.name, "pinned_sha256": pinned, "served_sha256": digest,
                            "served": contracts.definition(tool)}))
        self._reported.add((server, tool.name, digest))
        log.warning("MCP tool %s/%s changed since it was pinned; quarantined until re-pinned", server, tool.name)

    def forget_reports(self, server: str) -> None:
        """After a re-pin: a later change to the same tools is reported again."""
        self._reported = {entry for entry in self._reported if entry[0] != server}

    def _servers_for(self, caller: Caller, effective: EffectivePolicy) -> list[str]:
        servers = effective.compiled.policy.mcp_servers
        if caller.server is None:
            return list(servers)
        if caller.server not in servers:
            raise Refused(types.INVALID_PARAMS, "denied", f"no MCP server named {caller.server!r} in the policy; "
                          f"the servers are {', '.join(servers) or 'none'}")
        return [caller.server]

    def _route(self, server: str, caller: Caller, effective: EffectivePolicy) -> str:
        """The server that serves `server` for this caller: its read-only twin when a `read_only`
        override covers them and the policy names one."""
        twin = effective.compiled.policy.read_only_alternatives.get(server)
        if twin is None:
            return server
        now = utcnow()
        p = caller.principal
        for override in effective.overrides:
            if override.kind == "read_only" and override.active(now) and override.covers(p.email, p.teams):
                return twin
        return server

    def _decide(self, caller: Caller, effective: EffectivePolicy, server: str, tool: types.Tool) -> Decision:
        return effective.decide(Request("tool.call", f"{server}/{tool.name}", caller.subject, mode=caller.mode,
                                        tool_annotations=contracts.annotations_of(tool), now=utcnow()))

    # ---- tools/list ----------------------------------------------------------------------

    async def _list_tools(self, ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        caller = caller_of(ctx)
        effective = await self._policy.current()
        names = self._answer(lambda: self._servers_for(caller, effective))
        if caller.server is None:  # a server resting after failures is not asked again meanwhile
            names = [name for name in names if name not in self.disabled]
        listed = await asyncio.gather(*(self._visible(caller, effective, name) for name in names),
                                      return_exceptions=True)
        tools: list[types.Tool] = []
        for name, found in zip(names, listed):
            if isinstance(found, BaseException):  # one bad server never hides the others
                message = found.message if isinstance(found, UpstreamError) else _describe(found)
                if caller.server is not None:
                    raise MCPError(UNAVAILABLE, message, {"category": getattr(found, "category", "unavailable")})
                log.warning("tools/list: leaving out MCP server %s: %s", name, message)
                continue
            for tool in found:
                shown = tool.name if caller.server is not None else f"{name}{SEPARATOR}{tool.name}"
                tools.append(tool.model_copy(update={"name": shown}))
        return types.ListToolsResult(tools=tools)

    async def _visible(self, caller: Caller, effective: EffectivePolicy, name: str) -> list[types.Tool]:
        routed = self._route(name, caller, effective)
        judged = await self.tools_of(routed, effective)
        return [tool for tool in judged.served if self._decide(caller, effective, routed, tool).effect != "deny"]

    @staticmethod
    def _answer(work: Callable[[], T]) -> T:
        """Refusals outside tools/call are JSON-RPC errors."""
        try:
            return work()
        except Refused as refused:
            raise MCPError(refused.code, refused.message, refused.data) from None

    # ---- tools/call ----------------------------------------------------------------------

    async def _call_tool(self, ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult | types.InputRequiredResult:
        caller = caller_of(ctx)
        started = time.perf_counter()
        call = _Call(caller, params.name, params.arguments or {})
        try:
            return await self._govern(ctx, call, params)
        except Refused as refused:
            call.category = call.category or refused.category
            if caller.refusals_as_results:
                return types.CallToolResult(content=[types.TextContent(text=refused.message)], is_error=True,
                                            _meta={"corral": refused.data})
            raise MCPError(refused.code, refused.message, refused.data) from None
        finally:
            self._emit(call, (time.perf_counter() - started) * 1000)

    async def _govern(self, ctx: Any, call: _Call, params: types.CallToolRequestParams) -> types.CallToolResult | types.InputRequiredResult:
        caller = call.caller
        effective = await self._policy.current()
        servers = effective.compiled.policy.mcp_servers
        if caller.server is not None:
            self._servers_for(caller, effective)
            server, tool_name = caller.server, call.name
        else:
            server, separator, tool_name = call.name.partition(SEPARATOR)
            if not separator or server not in servers:
                raise Refused(types.INVALID_PARAMS, "denied", f"no tool named {call.name!r}: on /mcp tools are named "
                              f"server{SEPARATOR}tool; the servers are {', '.join(servers) or 'none'}")
        call.server, call.tool = self._route(server, caller, effective), tool_name
        size = len(json.dumps(call.arguments, default=str))
        if size > MAX_ARGUMENT_BYTES:
            raise Refused(types.INVALID_PARAMS, "denied", f"the arguments are {size} bytes; at most "
                          f"{MAX_ARGUMENT_BYTES} are accepted")
        call.store_payloads = servers[call.server].store_payloads
        tool, decision = await self._judge(call, effective)
        if decision.effect == "confirm":
            asking = await self._confirm(ctx, call, decision, params)
            if asking is not None:
                return asking
        elif decision.effect == "approve":
            await self._hold_for_approval(call, decision, servers[call.server].approval_wait_s)
            effective = await self._policy.current()  # it may have changed while the call was held
            tool, decision = await self._judge(call, effective, held=True)
        config = effective.compiled.policy.mcp_servers[call.server]
        if not await self._health.available(f"mcp:{call.server}", config.health):
            raise Refused(UNAVAILABLE, "unavailable", f"MCP server {call.server} is temporarily disabled after "
                          f"repeated failures ({self.upstream(call.server, effective).last_error}); it is tried again "
                          f"after {config.health.cooldown_s:g} s")
        mutating = call.tool_class != "read-only"
        if mutating:  # in the ledger before it happens
            await self._ledger(call, "forwarded", call.arguments_sha256)
        try:
            result = await self._forward(call, effective, config, tool)
        finally:
            if mutating:  # and how it ended, even when the caller went away meanwhile
                await asyncio.shield(self._ledger(call, call.outcome or "cancelled", call.result_sha256))
        if result is None:
            raise Refused(UNAVAILABLE if call.category == "unavailable" else UPSTREAM_FAILED, call.category or
                          "upstream_error", approvals.redact_text(call.error or "the call failed"))
        return result

    async def _judge(self, call: _Call, effective: EffectivePolicy, held: bool = False) -> tuple[types.Tool, Decision]:
        """The tool as served now and the policy's decision on calling it; a denial raises."""
        tool = await self._find(call, effective)
        decision = self._decide(call.caller, effective, call.server or "", tool)
        call.tool_class = effective.compiled.tool_class(f"{call.server}/{tool.name}", contracts.annotations_of(tool))
        if held and decision.effect != "deny":
            return tool, decision  # the approval given stands for anything short of a denial
        call.decision, call.rules = decision.effect, list(decision.rules)
        if decision.effect == "deny":
            why = " after it was approved (the policy or the tool changed meanwhile)" if held else ""
            raise Refused(DENIED, "denied", f"Corral {decision.reason}{why}. Use a tool your mode and role allow "
                          "(tools/list shows them), or ask an admin to change the policy", rule=_rule(decision),
                          decision="deny")
        return tool, decision

    async def _find(self, call: _Call, effective: EffectivePolicy) -> types.Tool:
        """The tool as the server serves it now, refused when it is quarantined, unpinned or
        unknown (a hidden tool is refused, never forwarded)."""
        server, name = call.server or "", call.tool or ""
        for refresh in (False, True):
            try:
                judged = await self.tools_of(server, effective, refresh=refresh)
            except UpstreamError as error:
                config = effective.compiled.policy.mcp_servers[server]
                if error.category in FAILURES:
                    await self._record_health(server, config, failed=True)
                raise Refused(UNAVAILABLE, "unavailable", error.message) from None
            found = judged.by_name.get(name)
            if found is not None:
                return found
            for tool, _ in judged.quarantined:
                if tool.name == name:
                    raise Refused(DENIED, "denied", f"tool {server}/{name} changed since it was pinned (its "
                                  "description, input schema or annotations differ), so it is quarantined; an "
                                  f"admin who has reviewed the change re-pins it with `corral mcp pin {server}`",
                                  rule="tool-contract")
            for tool in judged.unpinned:
                if tool.name == name:
                    raise Refused(DENIED, "denied", f"tool {server}/{name} is not pinned yet; an admin approves it "
                                  f"for use with `corral mcp pin {server} --tool {name}`", rule="tool-contract")
        raise Refused(types.INVALID_PARAMS, "denied", f"MCP server {server} has no tool named {name!r} that you may "
                      "call; tools/list shows the ones you may")

    async def _confirm(self, ctx: Any, call: _Call, decision: Decision,
                       params: types.CallToolRequestParams) -> types.InputRequiredResult | None:
        """Ask the acting user. Returns an input request (2026-07-28: the client asks and calls
        again with the answer) or None when the user accepted; raises when they did not or
        cannot be asked."""
        question = (f"Corral: {call.caller.principal.email}'s agent wants to call {call.server}/{call.tool} "
                    f"({call.tool_class}) with {_preview(call.arguments)}. {decision.reason}. Allow it?")
        schema: types.ElicitRequestedSchema = {"type": "object", "properties": {}}
        capabilities = ctx.session.client_capabilities
        if capabilities is None or capabilities.elicitation is None:
            raise Refused(DENIED, "denied", f"{call.server}/{call.tool} needs your confirmation "
                          f"(rule {_rule(decision)}), and this client cannot ask you (it does not support MCP "
                          "elicitation); run the agent in a client that does, or ask an admin to allow the tool "
                          "for you in the policy", rule=_rule(decision), decision="confirm")
        resource = f"{call.server}/{call.tool}"
        if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
            answered = (params.input_responses or {}).get(CONFIRM_KEY)
            if answered is None:
                state = self._seal.issue(call.caller.principal.user_id, resource, call.arguments_sha256)
                return types.InputRequiredResult(request_state=state, input_requests={CONFIRM_KEY: types.ElicitRequest(
                    params=types.ElicitRequestFormParams(message=question, requested_schema=schema))})
            problem = self._seal.check(params.request_state, call.caller.principal.user_id, resource,
                                       call.arguments_sha256)
            if problem is not None:
                raise Refused(DENIED, "denied", f"{resource} was not called: {problem}", rule=_rule(decision),
                              decision="confirm")
            action = getattr(answered, "action", None)
        else:
            try:
                async with asyncio.timeout(CONFIRM_WAIT_S):
                    action = (await ctx.session.elicit_form(question, schema, related_request_id=ctx.request_id)).action
            except TimeoutError:
                action = "cancel"
            except MCPError as error:
                raise Refused(DENIED, "denied", f"{resource} needs your confirmation and asking failed "
                              f"({error.message})", rule=_rule(decision), decision="confirm") from None
        call.confirmed = action
        if action != "accept":
            raise Refused(DENIED, "denied", f"you did not confirm {resource} ({action}), so it was not called",
                          rule=_rule(decision), decision="confirm")
        return None

    async def _hold_for_approval(self, call: _Call, decision: Decision, wait_s: float) -> None:
        caller = call.caller
        try:
            async with asyncio.timeout(10), self._database.transaction() as connection:
                approval = await approvals.request_approval(
                    connection, caller.principal, server=call.server or "", tool=call.tool or "",
                    tool_class=call.tool_class or "destructive", arguments=call.arguments, rules=list(decision.rules),
                    reason=decision.reason, task_id=caller.task_id, mode=caller.mode, wait_s=wait_s)
        except Conflict as error:
            raise Refused(DENIED, "denied", error.message, rule=_rule(decision), decision="approve") from None
        approval_id = call.approval_id = approval["id"]
        log.info("tool call %s/%s by %s held for approval %s", call.server, call.tool, caller.principal.email,
                 approval_id)
        try:
            status = await self.waiters.wait(approval_id, wait_s)
        except asyncio.CancelledError:  # the caller went away: nobody should approve a call that will not run
            await asyncio.shield(approvals.close_unanswered(self._database, approval_id, "the caller went away"))
            raise
        call.approval = status
        if status == "approved":
            return
        async with asyncio.timeout(10), self._database.read() as connection:
            found = await approvals.get_approval(connection, approval_id)
        if status == "rejected":
            why = f": {found['message']}" if found["message"] else ""
            raise Refused(DENIED, "denied", f"approval {approval_id} for {call.server}/{call.tool} was rejected by "
                          f"{found['decided_by']}{why}", rule=_rule(decision), decision="approve",
                          approval_id=approval_id)
        raise Refused(DENIED, "denied", f"approval {approval_id} for {call.server}/{call.tool} was not decided "
                      f"within {wait_s:g} s, so the call was not made; ask an approver to look at "
                      f"`corral approvals list` and call again", rule=_rule(decision), decision="approve",
                      approval_id=approval_id)

    async def _ledger(self, call: _Call, outcome: str, payload_sha256: str | None) -> None:
        await self._audit.append(AuditRecord(actor=call.caller.principal.email, action="tool.call",
                                             resource=f"{call.server}/{call.tool}", decision=call.decision,
                                             outcome=outcome, payload_sha256=payload_sha256))

    async def _forward(self, call: _Call, effective: EffectivePolicy, config: McpServer,
                       tool: types.Tool) -> types.CallToolResult | None:
        upstream = self.upstream(call.server or "", effective)
        idempotent = config.trust_annotations and tool.annotations is not None and tool.annotations.idempotent_hint
        attempts = 1 + (config.retries if call.tool_class == "read-only" or idempotent else 0)
        for attempt in range(attempts):
            call.attempts = attempt + 1
            try:
                result = await upstream.call_tool(call.tool or "", call.arguments)
            except UpstreamError as error:
                call.category, call.error, call.outcome = error.category, error.message, error.category
                if error.category in ("timeout", "unavailable") and attempt + 1 < attempts:
                    continue
                if error.category in FAILURES:  # once per call, however many attempts it took
                    await self._record_health(call.server or "", config, failed=True)
                return None
            call.category, call.error = None, None
            call.outcome = "error" if result.is_error else "ok"
            dumped = result.model_dump(by_alias=True, mode="json", exclude_none=True)
            call.result_sha256 = payload_sha256(dumped)
            if config.store_payloads:
                call.result = approvals.redact(dumped)
            await self._record_health(call.server or "", config, failed=False)
            return result
        return None

    async def _record_health(self, server: str, config: McpServer, failed: bool) -> None:
        target = f"mcp:{server}"
        await self._health.record(target, config.health, failed)
        if failed and server not in self.disabled and not await self._health.available(target, config.health):
            self.disabled.add(server)
            upstream = self.upstreams.get(server)
            self._recorder.emit(Event(kind="mcp.server.disabled", resource=server, outcome="cooling_down",
                                      attributes={"server": server, "cooldown_s": config.health.cooldown_s,
                                                  "last_error": upstream.last_error if upstream else None}))
            log.warning("MCP server %s disabled for %gs after repeated failures", server, config.health.cooldown_s)
        elif not failed and server in self.disabled:
            self.disabled.discard(server)
            self._recorder.emit(Event(kind="mcp.server.restored", resource=server, outcome="ok",
                                      attributes={"server": server}))

    def _emit(self, call: _Call, duration_ms: float) -> None:
        p = call.caller.principal
        attributes: dict[str, Any] = {
            "server": call.server, "tool": call.tool, "class": call.tool_class, "rules": call.rules,
            "category": call.category, "arguments_sha256": call.arguments_sha256, "attempts": call.attempts}
        for name in ("result_sha256", "approval_id", "approval", "confirmed"):
            if getattr(call, name) is not None:
                attributes[name] = getattr(call, name)
        if call.error is not None:
            attributes["error"] = approvals.redact_text(call.error)
        if call.store_payloads:
            attributes["arguments"] = approvals.redact(call.arguments)
            if call.result is not None:
                attributes["result"] = call.result
        self._recorder.emit(Event(kind="tool.call", action="tool.call", user_email=p.email, team=p.team,
                                  key_id=p.key_id, client=call.caller.client, task_id=call.caller.task_id,
                                  mode=call.caller.mode,
                                  resource=f"{call.server}/{call.tool}" if call.server else call.name[:200],
                                  decision=call.decision, outcome=call.outcome or call.category or "refused",
                                  duration_ms=round(duration_ms, 3), attributes=attributes))

    # ---- resources and prompts: passed through, past the same gate -----------------------

    async def _each(self, caller: Caller, method: str, send: Callable[[Client], Awaitable[T]]) -> list[tuple[str, T]]:
        """`send` to each server this caller reaches here, past the mode's tool groups, the
        overrides that close a server, and its breaker; as a `mcp.request` event."""
        effective = await self._policy.current()
        names = self._answer(lambda: self._servers_for(caller, effective))
        groups = effective.mode_groups(caller.mode)
        if caller.mode is not None and (groups is None or "mcp" not in groups):
            raise MCPError(DENIED, f"mode {caller.mode!r} does not have the 'mcp' tool group", {"category": "denied"})
        now, p = utcnow(), caller.principal
        closed = {o.target for o in effective.overrides if o.kind == "disable_server" and o.active(now)}

        async def one(name: str) -> T:
            routed = self._route(name, caller, effective)
            if routed in closed:
                raise Refused(DENIED, "denied", f"server {routed} is disabled by an override", rule="override")
            if routed in self.disabled:
                raise Refused(UNAVAILABLE, "unavailable", f"MCP server {routed} is temporarily disabled after "
                              "repeated failures")
            return await self.upstream(routed, effective).request(method, send)

        found = await asyncio.gather(*(one(name) for name in names), return_exceptions=True)
        results = []
        for name, result in zip(names, found):
            self._recorder.emit(Event(kind="mcp.request", action="tool.call", user_email=p.email, team=p.team,
                                      key_id=p.key_id, client=caller.client, task_id=caller.task_id, mode=caller.mode,
                                      resource=f"{name}/{method}", outcome="ok" if not isinstance(result, BaseException)
                                      else getattr(result, "category", "error")))
            if isinstance(result, BaseException):
                if caller.server is not None:
                    raise MCPError(getattr(result, "code", UNAVAILABLE), _describe(result),
                                   {"category": getattr(result, "category", "unavailable")})
                continue
            results.append((name, result))
        return results

    def _one_server(self, caller: Caller, server: str) -> Caller:
        return dataclasses.replace(caller, server=server)

    @staticmethod
    def _cursor(caller: Caller, params: types.PaginatedRequestParams | None) -> str | None:
        """Paging passes through on /mcp/{server}; /mcp lists each server's first page."""
        return params.cursor if params is not None and caller.server is not None else None

    @staticmethod
    def _next_cursor(caller: Caller, listed: list[tuple[str, Any]]) -> str | None:
        return listed[0][1].next_cursor if caller.server is not None and listed else None

    async def _list_resources(self, ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListResourcesResult:
        caller = caller_of(ctx)
        cursor = self._cursor(caller, params)
        listed = await self._each(caller, "resources/list", lambda c: c.list_resources(cursor=cursor))
        resources = []
        for server, page in listed:
            for resource in page.resources:
                uri = str(resource.uri)
                if len(self._resources) < 100_000 or uri in self._resources:
                    self._resources[uri] = server if self._resources.get(uri, server) == server else None
                resources.append(resource)
        return types.ListResourcesResult(resources=resources, next_cursor=self._next_cursor(caller, listed))

    async def _list_resource_templates(self, ctx: Any, params: types.PaginatedRequestParams | None
                                       ) -> types.ListResourceTemplatesResult:
        caller = caller_of(ctx)
        listed = await self._each(caller, "resources/templates/list", lambda c: c.list_resource_templates())
        return types.ListResourceTemplatesResult(
            resource_templates=[template for _, page in listed for template in page.resource_templates])

    async def _read_resource(self, ctx: Any, params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
        caller = caller_of(ctx)
        uri = str(params.uri)
        server = caller.server or self._resources.get(uri)
        if server is None:
            hint = "several servers list it; read it through /mcp/SERVER" if uri in self._resources \
                else "list the resources first, or read it through /mcp/SERVER"
            raise MCPError(types.INVALID_PARAMS, f"no one server is known to serve {uri}: {hint}")
        found = await self._each(self._one_server(caller, server), "resources/read", lambda c: c.read_resource(uri))
        return found[0][1]

    async def _list_prompts(self, ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListPromptsResult:
        caller = caller_of(ctx)
        cursor = self._cursor(caller, params)
        listed = await self._each(caller, "prompts/list", lambda c: c.list_prompts(cursor=cursor))
        prompts = []
        for server, page in listed:
            for prompt in page.prompts:
                name = prompt.name if caller.server is not None else f"{server}{SEPARATOR}{prompt.name}"
                prompts.append(prompt.model_copy(update={"name": name}))
        return types.ListPromptsResult(prompts=prompts, next_cursor=self._next_cursor(caller, listed))

    async def _get_prompt(self, ctx: Any, params: types.GetPromptRequestParams) -> types.GetPromptResult:
        caller = caller_of(ctx)
        server, name = caller.server, params.name
        if server is None:
            server, _, name = params.name.partition(SEPARATOR)
        found = await self._each(self._one_server(caller, server), "prompts/get",
                                 lambda c: c.get_prompt(name, params.arguments))
        return found[0][1]


@dataclass
class _Call:
    """What one tools/call came to, for its event."""

    caller: Caller
    name: str
    arguments: dict[str, Any]
    server: str | None = None
    tool: str | None = None
    tool_class: str | None = None
    decision: str | None = None
    rules: list[str] | None = None
    category: str | None = None
    outcome: str | None = None
    error: str | None = None
    attempts: int = 0
    approval_id: int | None = None
    approval: str | None = None
    confirmed: str | None = None
    result_sha256: str | None = None
    result: Any = None
    store_payloads: bool = False
    arguments_sha256: str = ""

    def __post_init__(self) -> None:
        self.arguments_sha256 = payload_sha256(self.arguments)


def _rule(decision: Decision) -> str:
    return ", ".join(decision.rules) or "default"


def _preview(arguments: dict[str, Any], limit: int = 4000) -> str:
    text = json.dumps(approvals.redact(arguments), ensure_ascii=False, default=str)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text) - limit} more characters not shown)"


def _describe(error: BaseException) -> str:
    return getattr(error, "message", None) or f"{type(error).__name__}: {error}"
