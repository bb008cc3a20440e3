"""What operators and runbooks use on the MCP servers: their status (`corral mcp servers`), pinning
their tools (`corral mcp pin`), and the contract and reliability check (`corral mcp check`)."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import mcp_types as types
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from sqlalchemy import func, select

from corral.audit.ledger import record_change
from corral.errors import InvalidRequest, NotFound, Unavailable
from corral.events.model import Event, utcnow
from corral.gateway.mcp import contracts
from corral.gateway.mcp.gateway import McpGateway
from corral.gateway.mcp.upstreams import Upstream, UpstreamError
from corral.identity.access import Principal
from corral.policy.engine import EffectivePolicy
from corral.policy.schema import McpServer
from corral.store.database import Database
from corral.store.tables import events


async def server_status(gateway: McpGateway, effective: EffectivePolicy, database: Database) -> list[dict[str, Any]]:
    """Each server with its connection, tool counts and recent error rate (the last hour's calls)."""
    servers = effective.compiled.policy.mcp_servers
    since = utcnow() - timedelta(hours=1)
    async with database.read() as connection:  # a call that failed has its error category as its outcome
        rows = (await connection.execute(
            select(events.c.resource, events.c.outcome, func.count()).where(
                events.c.kind == "tool.call", events.c.time >= since).group_by(events.c.resource, events.c.outcome)
        )).all()
    calls: dict[str, list[int]] = {}
    for resource, outcome, count in rows:
        counts = calls.setdefault((resource or "").split("/", 1)[0], [0, 0])
        counts[0] += count
        counts[1] += count if outcome in ("timeout", "upstream_error", "protocol_error", "unavailable") else 0

    async def one(name: str, config: McpServer) -> dict[str, Any]:
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
        return entry

    return list(await asyncio.gather(*(one(name, config) for name, config in servers.items())))


async def pin_server(gateway: McpGateway, effective: EffectivePolicy, database: Database, name: str,
                     tools: list[str], by: Principal) -> dict[str, Any]:
    """Pin a server's tools as it serves them now (all, or the named ones)."""
    _server(effective, name)  # a known server, or NotFound
    try:
        served = await gateway.upstream(name, effective).tools(refresh=True)
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
    fresh = Upstream(name, config, gateway.slots, tools_ttl_s=0)

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
            await step(f"probe {config.probe.tool}", lambda: _probe(fresh, effective, name, config, tools, pinned))
        return _verdict(name, steps)
    finally:
        await fresh.close()


async def _probe(upstream: Upstream, effective: EffectivePolicy, name: str, config: McpServer,
                 tools: list[types.Tool], pinned: dict[str, dict[str, Any]]) -> tuple[Any, str, bool]:
    assert config.probe is not None
    tool = next((t for t in tools if t.name == config.probe.tool), None)
    if tool is None:
        return None, f"the server has no tool {config.probe.tool!r}", False
    if tool.name in pinned and contracts.definition(tool) != pinned[tool.name]:
        return None, f"{tool.name} changed since it was pinned, so it is not called", False
    tool_class = effective.compiled.tool_class(f"{name}/{tool.name}", contracts.annotations_of(tool))
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
