"""The MCP gateway with the official `mcp` SDK's client, through Corral, to real MCP servers:
tests/mcp_server.py over stdio and Streamable HTTP (with its faults). What a caller sees in
tools/list, how each decision answers a tools/call (allow, deny, confirm through elicitation,
approve while held), pinned contracts and quarantine, a crashing server taken out of service
without touching the others, the ledger and the events."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import mcp_types as types
import pytest
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from corral.identity.tokens import generate_key
from tests.conftest import BACKENDS, REDIS_URL, free_port, own_database, start_server, stop_server, unique

SERVER = str(Path(__file__).with_name("mcp_server.py"))
PY = sys.executable

POLICY = """
version: 1
default: deny
defaults: {{tool.call: allow}}
roles: [admin, approver, auditor, developer, contractor, sre]
teams:
  contractors: {{roles: [contractor]}}
modes:
  code: {{tools: [read, edit, command, mcp]}}
  ask:  {{tools: [read]}}
mcp_servers:
  notes:    {{command: "{py}", args: ["{server}", "--state-file", "{state}/notes.json"], trust_annotations: true,
              env: {{MCP_TEST_IDENTITY: "env:NOTES_IDENTITY"}}, timeout_s: 5, approval_wait_s: 20}}
  notes-ro: {{command: "{py}", args: ["{server}"], trust_annotations: true}}
  web:      {{url: "http://127.0.0.1:{http_port}/mcp", headers: {{X-Test-Identity: "env:WEB_IDENTITY"}},
              trust_annotations: true, timeout_s: 5}}
  crashy:   {{command: "{py}", args: ["{server}", "--behaviour", "crash-on-call"], trust_annotations: true,
              timeout_s: 5, health: {{min_requests: 2, error_rate: 1.0, cooldown_s: 60}}}}
  hangs:    {{command: "{py}", args: ["{server}", "--behaviour", "hang-on-call"], trust_annotations: true,
              timeout_s: 1, retries: 1, health: {{min_requests: 100}}}}
  silent:   {{command: "{py}", args: ["{server}", "--behaviour", "no-init"], timeout_s: 1}}
  invalid:  {{command: "{py}", args: ["{server}", "--behaviour", "invalid-result"], trust_annotations: true,
              timeout_s: 5}}
  changing: {{command: "{py}", args: ["{server}", "--behaviour", "changing", "--state-file", "{state}/changing.json"],
              trust_annotations: true}}
  manual:   {{command: "{py}", args: ["{server}"], trust_annotations: true, pinning: manual}}
  missing:  {{command: "/nonexistent/mcp-server", timeout_s: 2}}
tools:
  - {{match: "notes/whoami", class: read-only}}
read_only_alternatives: {{notes: notes-ro}}
rules:
  - id: contractors-only-read-tools
    effect: deny
    action: tool.call
    when: {{team: contractors, class: [mutating, destructive]}}
    description: contractors may only use read-only tools
  - id: destructive-tools-need-approval
    effect: approve
    action: tool.call
    when: {{class: destructive}}
  - id: confirm-web-writes
    effect: confirm
    action: tool.call
    match: {{tool: ["web/write_note"]}}
"""


@pytest.fixture(scope="module")
def web_server(tmp_path_factory):
    """The test server over Streamable HTTP, as a remote MCP server would be."""
    port = free_port()
    process = subprocess.Popen([PY, SERVER, "--http", str(port)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/mcp", timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.1)
    yield port
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="module", params=BACKENDS)
def gateway(request, tmp_path_factory, web_server):
    data_dir = tmp_path_factory.mktemp(f"mcp-{request.param}")
    state = data_dir / "state"
    state.mkdir()
    policy = data_dir / "policy.yaml"
    policy.write_text(POLICY.format(py=PY, server=SERVER, state=state, http_port=web_server))
    admin_key = generate_key()
    shared = {"CORRAL_REDIS_URL": REDIS_URL, "CORRAL_REDIS_PREFIX": unique("corral-test")} \
        if request.param == "postgresql" else {}
    with own_database(request.param, data_dir) as database_url:
        env = {"CORRAL_ADMIN_KEY": admin_key, "CORRAL_POLICY": str(policy), "NOTES_IDENTITY": "notes-from-env",
               "WEB_IDENTITY": "web-from-env", **shared}
        process, url, log_path = start_server(data_dir, database_url, env)
        try:
            yield {"url": url, "admin": admin_key, "log": log_path, "state": state, "backend": request.param,
                   "database_url": database_url, "data_dir": data_dir, "env": env}
        finally:
            stop_server(process)


def admin(gateway):
    return {"Authorization": f"Bearer {gateway['admin']}"}


def person(gateway, teams=(), roles=("developer",)):
    """A new user with a key: (email, key)."""
    email = f"{unique('dev')}@example.com"
    for team in teams:
        httpx.post(gateway["url"] + "/api/v1/teams", json={"name": team}, headers=admin(gateway), timeout=10)
    created = httpx.post(gateway["url"] + "/api/v1/users", json={"email": email, "roles": list(roles),
                                                                  "teams": list(teams)}, headers=admin(gateway), timeout=10)
    assert created.status_code == 201, created.text
    scopes = ["gateway", "read", "policy"] if "approver" in roles else None
    body = {"user": email} if scopes is None else {"user": email, "scopes": scopes}
    key = httpx.post(gateway["url"] + "/api/v1/keys", json=body, headers=admin(gateway), timeout=10)
    return email, key.json()["key"]


def run(coroutine, timeout=60):
    """Run a client coroutine; an MCP error comes out as itself, not inside the SDK's task groups."""
    async def bounded():
        async with asyncio.timeout(timeout):
            return await coroutine
    try:
        return asyncio.run(bounded())
    except BaseExceptionGroup as group:
        found = group.subgroup(MCPError)
        while isinstance(found, BaseExceptionGroup):
            found = found.exceptions[0]
        if found is None:
            raise
        raise found from None


def connect(gateway, key, path="/mcp", mode="legacy", headers=None, **options):
    """An MCP client to Corral (legacy: the 2025-11-25 handshake; "2026-07-28": sessionless)."""
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {key}", **(headers or {})})
    return Client(streamable_http_client(gateway["url"] + path, http_client=http), mode=mode, cache=None,
                  read_timeout_seconds=30, **options)


async def names(gateway, key, path="/mcp", **options):
    async with connect(gateway, key, path, **options) as client:
        return sorted(tool.name for tool in (await client.list_tools()).tools)


async def call(gateway, key, tool, arguments=None, path="/mcp", **options):
    async with connect(gateway, key, path, **options) as client:
        return await client.call_tool(tool, arguments or {})


def text(result: types.CallToolResult) -> str:
    return "".join(block.text for block in result.content if isinstance(block, types.TextContent))


def events(gateway, kind, **filters):
    query = {"kind": kind, "limit": 200, **filters}
    found = httpx.get(gateway["url"] + "/api/v1/events", params=query, headers=admin(gateway), timeout=10)
    assert found.status_code == 200, found.text
    return found.json()["events"]


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    return predicate()


# ---- what a caller sees ------------------------------------------------------------------


def test_one_server_endpoint_lists_its_tools_under_their_own_names(gateway):
    _, key = person(gateway)
    # notes: echo, add, whoami, sleep, fail (read-only), write_note (mutating), delete_note
    # (destructive, needs approval: shown, since approval can allow it)
    assert run(names(gateway, key, "/mcp/notes")) == ["add", "delete_note", "echo", "fail", "sleep", "whoami",
                                                      "write_note"]


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
def test_all_servers_endpoint_namespaces_tools_and_leaves_out_broken_servers(gateway, mode):
    _, key = person(gateway)
    found = run(names(gateway, key, "/mcp", mode=mode))
    assert "notes__echo" in found and "web__echo" in found and "crashy__echo" in found
    # silent never answers the handshake and missing cannot start: left out, the rest listed
    assert not any(name.startswith(("silent__", "missing__")) for name in found)
    # manual pins nothing by itself: its tools wait for an admin's pin
    assert not any(name.startswith("manual__") for name in found)


def test_contractor_sees_only_read_only_tools(gateway):
    _, key = person(gateway, teams=["contractors"])
    found = run(names(gateway, key, "/mcp/notes"))
    assert found == ["add", "echo", "fail", "sleep", "whoami"]


def test_mode_without_the_mcp_group_sees_no_tools(gateway):
    _, key = person(gateway)
    assert run(names(gateway, key, "/mcp/notes", headers={"X-Corral-Mode": "ask"})) == []
    assert run(names(gateway, key, "/mcp/notes", headers={"X-Corral-Mode": "code"}))


# ---- decisions on calls --------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
def test_allowed_call_is_forwarded_with_the_servers_own_env_and_headers(gateway, mode):
    _, key = person(gateway)
    assert text(run(call(gateway, key, "notes__echo", {"text": "hi"}, mode=mode))) == "echo: hi"
    assert text(run(call(gateway, key, "whoami", path="/mcp/notes", mode=mode))) == "notes-from-env"
    assert text(run(call(gateway, key, "web__whoami", mode=mode))) == "web-from-env"


def test_contractors_mutating_call_is_refused_with_the_rule(gateway):
    email, key = person(gateway, teams=["contractors"])
    with pytest.raises(MCPError) as refused:
        run(call(gateway, key, "notes__write_note", {"name": "a", "body": "b"}))
    assert "contractors-only-read-tools" in refused.value.message
    assert refused.value.data["category"] == "denied"
    assert refused.value.data["rule"] == "contractors-only-read-tools"
    notes = gateway["state"] / "notes.json"
    assert not notes.exists() or '"a"' not in notes.read_text()  # never reached the server
    found = wait_for(lambda: [e for e in events(gateway, "tool.call", user=email)])
    assert found[0]["decision"] == "deny" and found[0]["attributes"]["category"] == "denied"


def test_refusal_as_a_tool_result_for_clients_that_ask(gateway):
    _, key = person(gateway, teams=["contractors"])
    result = run(call(gateway, key, "notes__write_note", {"name": "a", "body": "b"},
                      headers={"X-Corral-Refusals": "tool-result"}))
    assert result.is_error and "contractors-only-read-tools" in text(result)


def test_mutating_call_is_in_the_ledger_before_and_after(gateway):
    email, key = person(gateway)
    result = run(call(gateway, key, "notes__write_note", {"name": "ledgered", "body": "secret plans"}))
    assert text(result) == "wrote ledgered"
    records = httpx.get(gateway["url"] + "/api/v1/audit/records", params={"actor": email},
                        headers=admin(gateway), timeout=10).json()["records"]
    mine = [(r["action"], r["resource"], r["outcome"]) for r in records]
    assert mine == [("tool.call", "notes/write_note", "forwarded"), ("tool.call", "notes/write_note", "ok")]
    assert all("secret plans" not in json.dumps(r) for r in records)  # arguments only as a hash


def test_hidden_and_unknown_tools_are_refused(gateway):
    _, key = person(gateway, teams=["contractors"])
    with pytest.raises(MCPError) as unknown:
        run(call(gateway, key, "notes__no_such_tool"))
    assert "no tool named" in unknown.value.message
    with pytest.raises(MCPError) as no_server:
        run(call(gateway, key, "nowhere__echo"))
    assert "server__tool" in no_server.value.message
