"""The MCP gateway: agents list Corral as their one MCP server (`/mcp` for every server, tool
names `server__tool`; `/mcp/{server}` for one), and Corral decides every tool they see and
every call they make, then forwards to the real server (corral/gateway/mcp/upstreams.py).

Served with the official SDK's Streamable HTTP transport, so every protocol revision it speaks
works (2025-06-18 and 2025-11-25 with sessions, 2026-07-28 without). A call goes through, in
order: the tool's contract (a changed pinned tool is quarantined), the server's circuit breaker,
the policy decision (`tool.call`, with the tool's class), a person when the decision asks for
one (`confirm`: the acting user, through elicitation; `approve`: an approver, while the call is
held), the audit ledger before a mutating call is forwarded, the call itself (bounded, retried
only when safe), and the ledger again with its outcome. Every call is a `tool.call` event with
its error category.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import mcp_types as types
from mcp import MCPError
from mcp.server.lowlevel.server import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from corral.audit.ledger import AuditLog, record_change
from corral.audit.records import AuditRecord
from corral.errors import InvalidRequest, NotFound, Unavailable
from corral.events.model import Event, utcnow
from corral.events.recorder import EventRecorder
from corral.gateway.llm.health import health_for
from corral.gateway.mcp import approvals, contracts
from corral.gateway.mcp.upstreams import StdioSlots, Upstream, UpstreamError
from corral.identity.access import Principal
from corral.policy.active import PolicyState
from corral.policy.engine import Decision, EffectivePolicy, Request, Subject
from corral.policy.schema import McpServer
from corral.store.database import Database
from corral.store.tables import events

log = logging.getLogger("corral.mcp")
SEPARATOR = "__"  # `/mcp` names a tool `server__tool`
MAX_ARGUMENT_BYTES = 1_000_000
# JSON-RPC error codes (the implementation-defined server range), with `data.category`.
DENIED, UNAVAILABLE, UPSTREAM_FAILED, NOT_FOUND = -32010, -32011, -32012, -32602
CONFIRM_KEY = "corral-confirm"
CONFIRM_WAIT_S = 300.0  # for a person to answer a confirmation


@dataclass(frozen=True)
class Caller:
    """Who is calling, from the HTTP request that carries the message."""

    principal: Principal
    server: str | None  # /mcp/{server}; None on /mcp
    mode: str | None
    client: str | None
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
        raise MCPError(-32001, "not authenticated")
    headers = request.headers
    return Caller(principal=principal, server=request.scope.get("corral.mcp_server"),
                  mode=headers.get("x-corral-mode") or None, client=headers.get("user-agent"),
                  task_id=headers.get("x-corral-task") or None,
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
                 counters: object, max_stdio: int) -> None:
        self._policy = policy
        self._recorder = recorder
        self._audit = audit
        self._database = database
        self._health = health_for(counters)
        self._slots = StdioSlots(max_stdio)
        self.upstreams: dict[str, Upstream] = {}
        self.pins = contracts.Pins()
        self.waiters = approvals.Waiters(database)
        self._reported: set[tuple[str, str, str]] = set()  # (server, tool, hash) contract changes recorded here
        self.disabled: set[str] = set()  # servers this process has reported as cooling down
        self._resources: dict[str, str] = {}  # resource uri -> server, for /mcp
        # get_tool_input_schema: the 2026-07-28 transport would otherwise run a whole tools/list
        # (every server) before each call to check Mcp-Param headers, which Corral does not use.
        server = Server("corral", version="0.1.0", instructions="Corral: MCP tools, governed.",
                        get_tool_input_schema=lambda name: None,
                        on_list_tools=self._list_tools, on_call_tool=self._call_tool,
                        on_list_resources=self._list_resources, on_read_resource=self._read_resource,
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

    def upstream(self, name: str, config: McpServer) -> Upstream:
        """The connection to a server, made anew when the policy changed its settings."""
        found = self.upstreams.get(name)
        if found is None or found.config != config:
            if found is not None:
                asyncio.get_running_loop().create_task(found.close())
            found = self.upstreams[name] = Upstream(name, config, self._slots)
        return found

    async def tools_of(self, name: str, effective: EffectivePolicy, refresh: bool = False) -> contracts.Judged:
        """A server's tools judged against their pins (learning new ones on `learn` servers)."""
        config = effective.compiled.policy.mcp_servers[name]
        tools = await self.upstream(name, config).tools(refresh)
        if self.pins.stale():
            async with self._database.read() as connection:
                await self.pins.load(connection)
        judged = contracts.judge(tools, self.pins.of(name), learn=config.pinning == "learn")
        if judged.learned:
            await self._learn(name, [tool for tool, _ in judged.learned])
        for tool, pinned in judged.quarantined:
            await self._contract_changed(name, tool, pinned)
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
        self._reported.add((server, tool.name, digest))
        async with asyncio.timeout(10), self._database.transaction() as connection:
            await record_change(connection, Event(
                kind="tool.contract_changed", action="tool.call", resource=f"{server}/{tool.name}",
                decision="deny", outcome="quarantined",
                attributes={"server": server, "tool": tool.name, "pinned_sha256": pinned, "served_sha256": digest,
                            "served": contracts.definition(tool)}))
        log.warning("MCP tool %s/%s changed since it was pinned; quarantined until re-pinned", server, tool.name)

    def forget_reports(self, server: str) -> None:
        """After a re-pin: a later change to the same tools is reported again."""
        self._reported = {entry for entry in self._reported if entry[0] != server}

    def _servers_for(self, caller: Caller, effective: EffectivePolicy) -> list[str]:
        servers = effective.compiled.policy.mcp_servers
        if caller.server is None:
            return list(servers)
        if caller.server not in servers:
            raise MCPError(NOT_FOUND, f"no MCP server named {caller.server!r} in the policy; the servers are "
                                      f"{', '.join(servers) or 'none'}")
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
        annotations = tool.annotations.model_dump(by_alias=True, exclude_none=True) if tool.annotations else None
        return effective.decide(Request("tool.call", f"{server}/{tool.name}", caller.subject, mode=caller.mode,
                                        tool_annotations=annotations, now=utcnow()))

    # ---- tools/list ----------------------------------------------------------------------

    async def _list_tools(self, ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        caller = caller_of(ctx)
        effective = await self._policy.current()
        names = self._servers_for(caller, effective)
        listed = await asyncio.gather(*(self._visible(caller, effective, name) for name in names),
                                      return_exceptions=True)
        tools: list[types.Tool] = []
        for name, found in zip(names, listed):
            if isinstance(found, BaseException):  # one bad server never hides the others
                message = found.message if isinstance(found, UpstreamError) else str(found)
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
            server, tool_name = caller.server, call.name
            self._servers_for(caller, effective)
        else:
            server, separator, tool_name = call.name.partition(SEPARATOR)
            if not separator or server not in servers:
                raise Refused(NOT_FOUND, "not_found", f"no tool named {call.name!r}: on /mcp tools are named "
                              f"server{SEPARATOR}tool; the servers are {', '.join(servers) or 'none'}")
        server = self._route(server, caller, effective)
        call.server, call.tool = server, tool_name
        size = len(json.dumps(call.arguments, default=str))
        if size > MAX_ARGUMENT_BYTES:
            raise Refused(-32602, "invalid_request", f"the arguments are {size} bytes; at most "
                          f"{MAX_ARGUMENT_BYTES} are accepted")
        config = servers[server]
        call.store_payloads = config.store_payloads
        tool = await self._find(call, effective)
        decision = self._decide(caller, effective, server, tool)
        call.decision, call.rules = decision.effect, list(decision.rules)
        call.tool_class = effective.compiled.tool_class(f"{server}/{tool_name}", tool.annotations.model_dump(
            by_alias=True, exclude_none=True) if tool.annotations else None)
        if decision.effect == "deny":
            raise Refused(DENIED, "denied", _denied_message(call, decision), rule=_rule(decision),
                          decision="deny")
        if decision.effect == "confirm":
            answer = await self._confirm(ctx, call, decision, params)
            if answer is not None:
                return answer
        elif decision.effect == "approve":
            await self._hold_for_approval(call, decision, config)
        if not await self._health.available(f"mcp:{server}", config.health):
            raise Refused(UNAVAILABLE, "unavailable", f"MCP server {server} is temporarily disabled after repeated "
                          f"failures ({self.upstream(server, config).last_error}); it is tried again after "
                          f"{config.health.cooldown_s:g} s")
        mutating = call.tool_class != "read-only"
        if mutating:  # in the ledger before it happens
            await self._audit.append(AuditRecord(actor=caller.principal.email, action="tool.call",
                                                 resource=f"{server}/{tool_name}", decision=decision.effect,
                                                 outcome="forwarded", payload_sha256=call.arguments_sha256))
        result = await self._forward(call, config, tool)
        if mutating:
            await self._audit.append(AuditRecord(actor=caller.principal.email, action="tool.call",
                                                 resource=f"{server}/{tool_name}", decision=decision.effect,
                                                 outcome=call.outcome, payload_sha256=call.result_sha256))
        if call.category is not None:
            raise Refused(UPSTREAM_FAILED, call.category, call.error or "the call failed")
        assert result is not None
        return result

    async def _find(self, call: _Call, effective: EffectivePolicy) -> types.Tool:
        """The tool as the server serves it now, refused when it is quarantined, unpinned or
        unknown (a hidden tool is refused, never forwarded)."""
        server, name = call.server, call.tool
        assert server is not None and name is not None
        config = effective.compiled.policy.mcp_servers[server]
        if not await self._health.available(f"mcp:{server}", config.health):
            raise Refused(UNAVAILABLE, "unavailable", f"MCP server {server} is temporarily disabled after repeated "
                          f"failures; it is tried again after {config.health.cooldown_s:g} s")
        for refresh in (False, True):
            try:
                judged = await self.tools_of(server, effective, refresh=refresh)
            except UpstreamError as error:
                await self._record_health(server, config, failed=True)
                raise Refused(UNAVAILABLE, error.category, error.message) from None
            for tool in judged.served:
                if tool.name == name:
                    return tool
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
        raise Refused(NOT_FOUND, "not_found", f"MCP server {server} has no tool named {name!r} that you may call; "
                      "tools/list shows the ones you may")

    async def _confirm(self, ctx: Any, call: _Call, decision: Decision,
                       params: types.CallToolRequestParams) -> types.InputRequiredResult | None:
        """Ask the acting user. Returns an input request (2026-07-28: the client asks and retries)
        or None when the user accepted; raises when they did not or cannot be asked."""
        question = (f"Corral: {call.caller.principal.email}'s agent wants to call {call.server}/{call.tool} "
                    f"({call.tool_class}) with {_preview(call.arguments)}. {decision.reason}. Allow it?")
        schema: types.ElicitRequestedSchema = {"type": "object", "properties": {}}
        capabilities = ctx.session.client_capabilities
        if capabilities is None or capabilities.elicitation is None:
            raise Refused(DENIED, "denied", f"{call.server}/{call.tool} needs your confirmation "
                          f"(rule {_rule(decision)}), and this client cannot ask you (it does not support MCP "
                          "elicitation); run the agent in a client that does, or ask an admin to allow the tool "
                          "for you in the policy", rule=_rule(decision), decision="confirm")
        if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
            answered = (params.input_responses or {}).get(CONFIRM_KEY)
            if answered is None:
                return types.InputRequiredResult(input_requests={CONFIRM_KEY: types.ElicitRequest(
                    params=types.ElicitRequestFormParams(message=question, requested_schema=schema))})
            action = getattr(answered, "action", None)
        else:
            try:
                async with asyncio.timeout(CONFIRM_WAIT_S):
                    action = (await ctx.session.elicit_form(question, schema, related_request_id=ctx.request_id)).action
            except TimeoutError:
                action = "cancel"
            except MCPError as error:
                raise Refused(DENIED, "denied", f"{call.server}/{call.tool} needs your confirmation and asking "
                              f"failed ({error.message})", rule=_rule(decision), decision="confirm") from None
        call.confirmed = action
        if action != "accept":
            raise Refused(DENIED, "denied", f"you did not confirm {call.server}/{call.tool} ({action}), so it was "
                          "not called", rule=_rule(decision), decision="confirm")
        return None

    async def _hold_for_approval(self, call: _Call, decision: Decision, config: McpServer) -> None:
        caller = call.caller
        async with asyncio.timeout(10), self._database.transaction() as connection:
            approval = await approvals.request_approval(
                connection, caller.principal, server=call.server or "", tool=call.tool or "",
                tool_class=call.tool_class or "destructive", arguments=call.arguments, rules=list(decision.rules),
                reason=decision.reason, task_id=caller.task_id, mode=caller.mode, wait_s=config.approval_wait_s)
        call.approval_id = approval["id"]
        log.info("tool call %s/%s by %s held for approval %s", call.server, call.tool, caller.principal.email,
                 call.approval_id)
        status = await self.waiters.wait(approval["id"], config.approval_wait_s)
        call.approval = status
        if status == "approved":
            return
        async with self._database.read() as connection:
            found = await approvals.get_approval(connection, approval["id"])
        if status == "rejected":
            why = f": {found['message']}" if found["message"] else ""
            raise Refused(DENIED, "denied", f"approval {approval['id']} for {call.server}/{call.tool} was rejected by "
                          f"{found['decided_by']}{why}", rule=_rule(decision), decision="approve",
                          approval_id=approval["id"])
        raise Refused(DENIED, "denied", f"approval {approval['id']} for {call.server}/{call.tool} was not decided "
                      f"within {config.approval_wait_s:g} s, so the call was not made; ask an approver to look at "
                      f"`corral approvals list` and call again", rule=_rule(decision), decision="approve",
                      approval_id=approval["id"])

    async def _forward(self, call: _Call, config: McpServer, tool: types.Tool) -> types.CallToolResult | None:
        upstream = self.upstream(call.server or "", config)
        hints = tool.annotations
        safe = call.tool_class == "read-only" or bool(hints and hints.idempotent_hint)
        attempts = 1 + (config.retries if safe else 0)
        for attempt in range(attempts):
            call.attempts = attempt + 1
            try:
                result = await upstream.call_tool(call.tool or "", call.arguments)
            except UpstreamError as error:
                call.category, call.error, call.outcome = error.category, error.message, error.category
                await self._record_health(call.server or "", config, failed=True)
                if error.category in ("timeout", "unavailable") and attempt + 1 < attempts:
                    continue
                return None
            call.category, call.error = None, None
            call.outcome = "error" if result.is_error else "ok"
            dumped = result.model_dump(by_alias=True, mode="json", exclude_none=True)
            call.result_sha256 = approvals.payload_hash(dumped)
            if config.store_payloads:
                call.result = dumped
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
        for name in ("result_sha256", "approval_id", "approval", "confirmed", "error"):
            if getattr(call, name) is not None:
                attributes[name] = getattr(call, name)
        if call.store_payloads:
            attributes["arguments"] = approvals.redact(call.arguments)
            if call.result is not None:
                attributes["result"] = call.result
        self._recorder.emit(Event(kind="tool.call", action="tool.call", user_email=p.email, team=p.team,
                                  key_id=p.key_id, client=call.caller.client, task_id=call.caller.task_id,
                                  mode=call.caller.mode,
                                  resource=f"{call.server}/{call.tool}" if call.server else call.name,
                                  decision=call.decision, outcome=call.outcome or call.category or "refused",
                                  duration_ms=round(duration_ms, 3), attributes=attributes))

    # ---- resources and prompts: passed through -------------------------------------------

    async def _each(self, caller: Caller, what: str, fetch: Any) -> list[tuple[str, Any]]:
        effective = await self._policy.current()
        names = self._servers_for(caller, effective)
        servers = effective.compiled.policy.mcp_servers

        async def one(name: str) -> Any:
            routed = self._route(name, caller, effective)
            upstream = self.upstream(routed, servers[routed])
            return await upstream.request(what, fetch)

        found = await asyncio.gather(*(one(name) for name in names), return_exceptions=True)
        results = []
        for name, result in zip(names, found):
            if isinstance(result, BaseException):
                if caller.server is not None:
                    raise MCPError(UNAVAILABLE, getattr(result, "message", str(result)))
                continue
            results.append((name, result))
        return results

    async def _list_resources(self, ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListResourcesResult:
        caller = caller_of(ctx)
        listed = await self._each(caller, "resources/list", lambda c: c.list_resources())
        resources = []
        for server, page in listed:
            for resource in page.resources:
                self._resources[str(resource.uri)] = server
                resources.append(resource)
        return types.ListResourcesResult(resources=resources)

    async def _read_resource(self, ctx: Any, params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
        caller = caller_of(ctx)
        uri = str(params.uri)
        server = caller.server or self._resources.get(uri)
        if server is None:
            raise MCPError(NOT_FOUND, f"no server is known to serve {uri}; list the resources first")
        pinned = Caller(caller.principal, server, caller.mode, caller.client, caller.task_id, caller.refusals_as_results)
        found = await self._each(pinned, "resources/read", lambda c: c.read_resource(uri))
        return found[0][1]

    async def _list_prompts(self, ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListPromptsResult:
        caller = caller_of(ctx)
        listed = await self._each(caller, "prompts/list", lambda c: c.list_prompts())
        prompts = []
        for server, page in listed:
            for prompt in page.prompts:
                name = prompt.name if caller.server is not None else f"{server}{SEPARATOR}{prompt.name}"
                prompts.append(prompt.model_copy(update={"name": name}))
        return types.ListPromptsResult(prompts=prompts)

    async def _get_prompt(self, ctx: Any, params: types.GetPromptRequestParams) -> types.GetPromptResult:
        caller = caller_of(ctx)
        server, name = caller.server, params.name
        if server is None:
            server, _, name = params.name.partition(SEPARATOR)
        pinned = Caller(caller.principal, server, caller.mode, caller.client, caller.task_id, caller.refusals_as_results)
        found = await self._each(pinned, "prompts/get", lambda c: c.get_prompt(name, params.arguments))
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

    @property
    def arguments_sha256(self) -> str:
        return approvals.payload_hash(self.arguments)


def _rule(decision: Decision) -> str:
    return ", ".join(decision.rules) or "default"


def _denied_message(call: _Call, decision: Decision) -> str:
    return (f"Corral {decision.reason}. Use a tool your mode and role allow (tools/list shows them), or ask an "
            "admin to change the policy")


def _preview(arguments: dict[str, Any], limit: int = 300) -> str:
    text = json.dumps(approvals.redact(arguments), ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit] + "…"


# ---- operators: the servers, their pins, the contract and reliability check ------------------


async def server_status(gateway: McpGateway, effective: EffectivePolicy, database: Database) -> list[dict[str, Any]]:
    """Each server with its connection, tool counts and recent error rate (the last hour's calls)."""
    servers = effective.compiled.policy.mcp_servers
    since = utcnow() - timedelta(hours=1)
    async with database.read() as connection:
        rows = (await connection.execute(
            select(events.c.resource, events.c.attributes).where(events.c.kind == "tool.call", events.c.time >= since)
            .order_by(events.c.id.desc()).limit(50_000))).all()
    calls: dict[str, list[int]] = {}
    for resource, attributes in rows:
        server = (attributes or {}).get("server") or (resource or "").split("/", 1)[0]
        failed = (attributes or {}).get("category") in ("timeout", "upstream_error", "protocol_error", "unavailable")
        counts = calls.setdefault(server, [0, 0])
        counts[0] += 1
        counts[1] += failed
    listed = []
    for name, config in servers.items():
        upstream = gateway.upstreams.get(name)
        entry: dict[str, Any] = {"name": name, "transport": "stdio" if config.command else config.transport,
                                 "pinning": config.pinning, "trust_annotations": config.trust_annotations}
        try:
            if name in gateway.disabled:  # resting: not disturbed by a status query
                raise UpstreamError("unavailable", "cooling down after repeated failures")
            async with asyncio.timeout(config.timeout_s + 1):
                judged = await gateway.tools_of(name, effective)
            entry.update(status="up", tools=len(judged.served), quarantined=[tool.name for tool, _ in judged.quarantined],
                         unpinned=[tool.name for tool in judged.unpinned])
        except (UpstreamError, TimeoutError) as error:
            entry.update(status="cooling down" if name in gateway.disabled else "unavailable", tools=None,
                         quarantined=[], unpinned=[],
                         error=getattr(error, "message", "no answer in time"))
        if upstream is not None:
            entry["protocol_version"] = upstream.protocol_version
            entry["last_error"] = upstream.last_error
        total, failed = calls.get(name, [0, 0])
        entry["calls_last_hour"] = total
        entry["error_rate"] = round(failed / total, 4) if total else None
        listed.append(entry)
    return listed


async def pin_server(gateway: McpGateway, effective: EffectivePolicy, database: Database, name: str,
                     tools: list[str], by: Principal) -> dict[str, Any]:
    """Pin a server's tools as it serves them now (all, or the named ones)."""
    config = _server(effective, name)
    try:
        served = await gateway.upstream(name, config).tools(refresh=True)
    except UpstreamError as error:
        raise Unavailable(error.message) from None
    unknown = sorted(set(tools) - {tool.name for tool in served})
    if unknown:
        raise InvalidRequest(f"MCP server {name} has no tool named {unknown[0]!r}")
    chosen = [tool for tool in served if not tools or tool.name in tools]
    async with database.transaction() as connection:
        changed = await contracts.pin(connection, name, chosen, by=by.email)
        await record_change(connection, Event(
            kind="tool.pinned", action="admin.tool.pin", user_email=by.email, team=by.team, key_id=by.key_id,
            resource=name, outcome="ok", attributes={"server": name, "tools": changed,
                                                     "sha256": {t.name: contracts.fingerprint(t) for t in chosen
                                                                if t.name in changed}}))
    gateway.pins.forget()
    gateway.forget_reports(name)
    return {"server": name, "pinned": changed, "unchanged": [t.name for t in chosen if t.name not in changed]}


async def check_server(gateway: McpGateway, effective: EffectivePolicy, database: Database,
                       name: str) -> dict[str, Any]:
    """The contract and reliability check runbooks run before restoring a server: a fresh
    connection, its tools, their pins, their input schemas, and the probe tool if configured."""
    config = _server(effective, name)
    steps: list[dict[str, Any]] = []
    fresh = Upstream(name, config, gateway._slots)

    async def step(what: str, work: Any) -> Any:
        started = time.perf_counter()
        try:
            result, detail, passed = await work()
        except UpstreamError as error:
            result, detail, passed = None, error.message, False
        steps.append({"step": what, "passed": passed, "detail": detail,
                      "latency_ms": round((time.perf_counter() - started) * 1000, 1)})
        return result

    async def connect() -> tuple[Any, str, bool]:
        client = await fresh.client()
        return client, f"connected over {fresh.transport}, protocol {client.protocol_version}", True

    async def list_tools() -> tuple[Any, str, bool]:
        tools = await fresh.tools(refresh=True)
        return tools, f"{len(tools)} tools", True

    try:
        if await step("connect", connect) is None:
            return _verdict(name, steps)
        tools = await step("tools/list", list_tools)
        if tools is None:
            return _verdict(name, steps)
        async with database.read() as connection:
            pinned = await contracts.pinned_definitions(connection, name)
        steps.append(_pin_step(tools, pinned))
        steps.append(_schema_step(tools))
        if config.probe is not None:
            await step(f"probe {config.probe.tool}", lambda: _probe(fresh, effective, name, config, tools))
        return _verdict(name, steps)
    finally:
        await fresh.close()


async def _probe(upstream: Upstream, effective: EffectivePolicy, name: str, config: McpServer,
                 tools: list[types.Tool]) -> tuple[Any, str, bool]:
    assert config.probe is not None
    tool = next((t for t in tools if t.name == config.probe.tool), None)
    if tool is None:
        return None, f"the server has no tool {config.probe.tool!r}", False
    annotations = tool.annotations.model_dump(by_alias=True, exclude_none=True) if tool.annotations else None
    tool_class = effective.compiled.tool_class(f"{name}/{tool.name}", annotations)
    if tool_class != "read-only":
        return None, f"{tool.name} is {tool_class}, and only a read-only tool is called as a probe", False
    result = await upstream.call_tool(tool.name, dict(config.probe.arguments))
    if result.is_error:
        return None, f"the tool answered with an error: {_result_text(result)[:200]}", False
    return result, f"answered: {_result_text(result)[:120]}", True


def _pin_step(tools: list[types.Tool], pinned: dict[str, dict[str, Any]]) -> dict[str, Any]:
    served = {tool.name: tool for tool in tools}
    changed = sorted(name for name, tool in served.items()
                     if name in pinned and contracts.definition(tool) != pinned[name])
    unpinned = sorted(set(served) - set(pinned))
    gone = sorted(set(pinned) - set(served))
    parts = [f"{len(served) - len(changed) - len(unpinned)} match their pins"]
    if changed:
        parts.append(f"changed since pinned: {', '.join(changed)}")
    if unpinned:
        parts.append(f"not pinned: {', '.join(unpinned)}")
    if gone:
        parts.append(f"pinned but no longer served: {', '.join(gone)}")
    return {"step": "pins", "passed": not changed, "detail": "; ".join(parts), "latency_ms": 0.0,
            "changed": changed, "unpinned": unpinned, "gone": gone}


def _schema_step(tools: list[types.Tool]) -> dict[str, Any]:
    bad = []
    for tool in tools:
        try:
            Draft202012Validator.check_schema(tool.input_schema)
            if tool.input_schema.get("type") != "object":
                raise SchemaError("the input schema's type is not object")
        except SchemaError as error:
            bad.append(f"{tool.name}: {error.message}")
    return {"step": "input schemas", "passed": not bad, "latency_ms": 0.0,
            "detail": "; ".join(bad) if bad else f"{len(tools)} valid JSON Schemas"}


def _verdict(name: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {"server": name, "passed": all(step["passed"] for step in steps), "steps": steps}


def _server(effective: EffectivePolicy, name: str) -> McpServer:
    servers = effective.compiled.policy.mcp_servers
    if name not in servers:
        raise NotFound(f"no MCP server named {name!r} in the policy; the servers are {', '.join(servers) or 'none'}")
    return servers[name]


def _result_text(result: types.CallToolResult) -> str:
    return " ".join(block.text for block in result.content if isinstance(block, types.TextContent))
