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
from tests.conftest import BACKENDS, REDIS_URL, free_port, listening, own_database, start_server, stop_server, unique

SERVER = str(Path(__file__).with_name("mcp_server.py"))
FIXTURES = Path(__file__).parent / "fixtures" / "agents" / "mcp-tools"  # github-mcp-server's 117 tools
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
  flaky:    {{command: "{py}", args: ["{server}", "--behaviour", "crash-on-call", "--state-file", "{state}/flaky.json"],
              trust_annotations: true, health: {{min_requests: 2, error_rate: 1.0, cooldown_s: 4}}}}
  hangs:    {{command: "{py}", args: ["{server}", "--behaviour", "hang-on-call"], trust_annotations: true,
              timeout_s: 1, retries: 1, health: {{min_requests: 100}}}}
  silent:   {{command: "{py}", args: ["{server}", "--behaviour", "no-init"], connect_timeout_s: 1}}
  invalid:  {{command: "{py}", args: ["{server}", "--behaviour", "invalid-result"], trust_annotations: true,
              timeout_s: 5}}
  changing: {{command: "{py}", args: ["{server}", "--behaviour", "changing", "--state-file", "{state}/changing.json"],
              trust_annotations: true}}
  manual:   {{command: "{py}", args: ["{server}"], trust_annotations: true, pinning: manual}}
  missing:  {{command: "/nonexistent/mcp-server", connect_timeout_s: 2}}
  github:   {{command: "{py}", args: ["{server}", "--tools-from", "{fixtures}"], trust_annotations: true}}
  github-untrusted: {{command: "{py}", args: ["{server}", "--tools-from", "{fixtures}"]}}
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
    with listening([PY, SERVER, "--http", str(port)], f"http://127.0.0.1:{port}/mcp"):
        yield port


@pytest.fixture(scope="module", params=BACKENDS)
def gateway(request, tmp_path_factory, web_server):
    data_dir = tmp_path_factory.mktemp(f"mcp-{request.param}")
    state = data_dir / "state"
    state.mkdir()
    policy = data_dir / "policy.yaml"
    policy.write_text(POLICY.format(py=PY, server=SERVER, state=state, http_port=web_server, fixtures=FIXTURES))
    admin_key = generate_key()
    shared = {"CORRAL_REDIS_URL": REDIS_URL, "CORRAL_REDIS_PREFIX": unique("corral-test")} \
        if request.param == "postgresql" else {}
    with own_database(request.param, data_dir) as database_url:
        env = {"CORRAL_ADMIN_KEY": admin_key, "CORRAL_POLICY": str(policy), "NOTES_IDENTITY": "notes-from-env",
               "CORRAL_MCP_TOOLS_SECONDS": "1",
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


def test_a_real_servers_117_tools_are_filtered_by_their_trusted_annotations(gateway):
    read_only = sorted(raw["name"] for raw in (json.loads(path.read_text()) for path in FIXTURES.glob("*.json"))
                       if raw["annotations"].get("readOnlyHint") is True)
    _, developer = person(gateway)
    _, contractor = person(gateway, teams=["contractors"])
    assert len(run(names(gateway, developer, "/mcp/github"))) == 117  # approval can allow the rest
    assert run(names(gateway, contractor, "/mcp/github")) == read_only and len(read_only) == 58
    # the same tools from a server whose annotations are not trusted are all destructive
    assert run(names(gateway, contractor, "/mcp/github-untrusted")) == []
    assert text(run(call(gateway, contractor, "github__get_me"))) == "called get_me"


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


# ---- people in the loop ----------------------------------------------------------------------


def corral_cli(gateway, key, *args, timeout=60):
    env = {"CORRAL_URL": gateway["url"], "CORRAL_KEY": key, "PATH": str(Path(sys.executable).parent),
           "COLUMNS": "250"}
    return subprocess.run([str(Path(sys.executable).with_name("corral")), *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def held_call(gateway, key, tool, arguments):
    """Start a call that will be held, in a thread; returns (thread, outcome dict)."""
    outcome = {}

    def work():
        try:
            outcome["result"] = run(call(gateway, key, tool, arguments))
        except Exception as error:  # noqa: BLE001 - the test looks at what it was
            outcome["error"] = error

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread, outcome


def pending_for(gateway, email):
    def find():
        listed = httpx.get(gateway["url"] + "/api/v1/approvals", headers=admin(gateway), timeout=10).json()
        return [entry for entry in listed["approvals"] if entry["requested_by"] == email]
    return wait_for(find, timeout=20)


def test_destructive_call_waits_for_an_approver_and_proceeds_once_approved(gateway):
    email, key = person(gateway, roles=("developer", "approver"))  # an approver, who still needs another
    approver, approver_key = person(gateway, roles=("approver",))
    assert text(run(call(gateway, key, "notes__write_note", {"name": "old", "body": "x"}))) == "wrote old"
    thread, outcome = held_call(gateway, key, "notes__delete_note", {"name": "old", "api_token": "tok-very-secret"})
    [pending] = pending_for(gateway, email)
    assert pending["tool"] == "delete_note" and pending["tool_class"] == "destructive"
    assert pending["rules"] == ["destructive-tools-need-approval"]
    assert pending["arguments"] == {"name": "old", "api_token": "[redacted]"}
    assert thread.is_alive()  # held

    listed = corral_cli(gateway, approver_key, "approvals", "list")
    assert listed.returncode == 0 and "delete_note" in listed.stdout and "tok-very-secret" not in listed.stdout
    mine = corral_cli(gateway, key, "approvals", "approve", str(pending["id"]))  # not their own
    assert mine.returncode == 1 and "your own call" in mine.stderr
    approved = corral_cli(gateway, approver_key, "approvals", "approve", str(pending["id"]), "-m", "ok")
    assert approved.returncode == 0, approved.stderr
    thread.join(30)
    assert text(outcome["result"]) == "deleted old"
    again = corral_cli(gateway, approver_key, "approvals", "reject", str(pending["id"]), "-m", "late")
    assert again.returncode == 1 and "approved already" in again.stderr
    found = wait_for(lambda: [e for e in events(gateway, "tool.call", user=email) if e["outcome"] == "ok"])
    assert found[0]["attributes"]["approval_id"] == pending["id"] and found[0]["decision"] == "approve"


def test_rejected_call_tells_the_agent_why_with_the_approval_id(gateway):
    email, key = person(gateway)
    _, approver_key = person(gateway, roles=("approver",))
    thread, outcome = held_call(gateway, key, "notes__delete_note", {"name": "keep"})
    [pending] = pending_for(gateway, email)
    rejected = corral_cli(gateway, approver_key, "approvals", "reject", str(pending["id"]), "-m", "not in prod")
    assert rejected.returncode == 0, rejected.stderr
    thread.join(30)
    error = outcome["error"]
    assert isinstance(error, MCPError)
    assert f"approval {pending['id']}" in error.message and "not in prod" in error.message
    assert error.data["approval_id"] == pending["id"]


def test_developer_cannot_approve_and_others_cannot_see_the_call(gateway):
    email, key = person(gateway)
    _, other_key = person(gateway)
    thread, outcome = held_call(gateway, key, "notes__delete_note", {"name": "x"})
    [pending] = pending_for(gateway, email)
    denied = corral_cli(gateway, other_key, "approvals", "approve", str(pending["id"]))
    assert denied.returncode == 1
    shown = httpx.get(gateway["url"] + f"/api/v1/approvals/{pending['id']}",
                      headers={"Authorization": f"Bearer {other_key}"}, timeout=10)
    assert shown.status_code == 403
    httpx.post(gateway["url"] + f"/api/v1/approvals/{pending['id']}/reject", json={"message": "cleanup"},
               headers=admin(gateway), timeout=10)
    thread.join(30)


async def _confirming(gateway, key, tool, arguments, answer, mode):
    asked = []

    async def elicit(context, params):
        asked.append(params.message)
        return types.ElicitResult(action=answer)

    async with connect(gateway, key, mode=mode, elicitation_callback=elicit) as client:
        try:
            return await client.call_tool(tool, arguments), asked
        except MCPError as error:
            return error, asked


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
def test_confirm_asks_the_user_through_elicitation(gateway, mode):
    _, key = person(gateway)
    result, asked = run(_confirming(gateway, key, "web__write_note", {"name": "c", "body": "b"}, "accept", mode))
    assert text(result) == "wrote c"
    assert "web/write_note" in asked[0] and "confirm-web-writes" in asked[0]
    refused, asked = run(_confirming(gateway, key, "web__write_note", {"name": "d", "body": "b"}, "decline", mode))
    assert isinstance(refused, MCPError) and "did not confirm" in refused.message and len(asked) == 1


def test_confirm_without_elicitation_is_denied_with_how_to_get_it_allowed(gateway):
    _, key = person(gateway)
    with pytest.raises(MCPError) as refused:
        run(call(gateway, key, "web__write_note", {"name": "e", "body": "b"}))
    assert "does not support MCP elicitation" in refused.value.message
    assert refused.value.data["rule"] == "confirm-web-writes"


# ---- contracts ---------------------------------------------------------------------------------


def test_changed_tool_is_quarantined_until_re_pinned(gateway):
    _, key = person(gateway)
    state = gateway["state"] / "changing.json"
    state.write_text(json.dumps({"changed": False}))
    assert "changing__echo" in run(names(gateway, key))  # learned (pinned) at first sight
    state.write_text(json.dumps({"changed": True}))  # the server now says "IGNORE PREVIOUS INSTRUCTIONS..."
    time.sleep(1.2)  # the gateway's tool list is fetched again after CORRAL_MCP_TOOLS_SECONDS
    assert "changing__echo" not in run(names(gateway, key))
    with pytest.raises(MCPError) as refused:
        run(call(gateway, key, "changing__echo", {"text": "x"}))
    assert "quarantined" in refused.value.message and "corral mcp pin changing" in refused.value.message
    changed = wait_for(lambda: events(gateway, "tool.contract_changed"))
    assert changed[0]["resource"] == "changing/echo"
    assert "IGNORE PREVIOUS" in changed[0]["attributes"]["served"]["description"]
    check = corral_cli(gateway, gateway["admin"], "mcp", "check", "changing")
    assert check.returncode == 1 and "changed since pinned: echo" in check.stdout
    pinned = corral_cli(gateway, gateway["admin"], "mcp", "pin", "changing")
    assert pinned.returncode == 0 and "echo" in pinned.stdout
    assert "changing__echo" in run(names(gateway, key))
    state.write_text(json.dumps({"changed": False}))


def test_manual_server_serves_only_pinned_tools(gateway):
    _, key = person(gateway)
    with pytest.raises(MCPError) as refused:
        run(call(gateway, key, "manual__echo", {"text": "x"}))
    assert "not pinned yet" in refused.value.message
    _, developer_key = person(gateway)
    assert corral_cli(gateway, developer_key, "mcp", "pin", "manual").returncode == 1  # admins only
    pinned = corral_cli(gateway, gateway["admin"], "mcp", "pin", "manual", "--tool", "echo")
    assert pinned.returncode == 0, pinned.stderr
    assert [n for n in run(names(gateway, key)) if n.startswith("manual__")] == ["manual__echo"]
    assert text(run(call(gateway, key, "manual__echo", {"text": "x"}))) == "echo: x"


# ---- faults ------------------------------------------------------------------------------------


def test_crashing_server_is_disabled_and_reported_without_affecting_others(gateway):
    _, key = person(gateway)
    for _ in range(2):
        with pytest.raises(MCPError) as failed:
            run(call(gateway, key, "crashy__echo", {"text": "x"}))
        assert failed.value.data["category"] == "unavailable"
    with pytest.raises(MCPError) as disabled:
        run(call(gateway, key, "crashy__echo", {"text": "x"}))
    assert "temporarily disabled" in disabled.value.message
    assert wait_for(lambda: events(gateway, "mcp.server.disabled"))[0]["resource"] == "crashy"
    assert text(run(call(gateway, key, "notes__echo", {"text": "still here"}))) == "echo: still here"
    servers = corral_cli(gateway, gateway["admin"], "mcp", "servers", "--json")
    crashy = next(s for s in json.loads(servers.stdout) if s["name"] == "crashy")
    assert crashy["status"] == "cooling down" and crashy["error_rate"] == 1.0


def test_hanging_call_times_out_after_its_retries(gateway):
    email, key = person(gateway)
    with pytest.raises(MCPError) as failed:
        run(call(gateway, key, "hangs__echo", {"text": "x"}))
    assert failed.value.data["category"] == "timeout" and "within 1 s" in failed.value.message
    found = wait_for(lambda: events(gateway, "tool.call", user=email))
    assert found[0]["attributes"]["attempts"] == 2  # read-only: retried once
    with pytest.raises(MCPError) as mutating:
        run(call(gateway, key, "hangs__write_note", {"name": "n", "body": "b"}))
    assert mutating.value.data["category"] == "timeout"
    found = wait_for(lambda: [e for e in events(gateway, "tool.call", user=email) if e["resource"] == "hangs/write_note"])
    assert found[0]["attributes"]["attempts"] == 1  # never retried: it may have happened


def test_invalid_result_is_a_protocol_error(gateway):
    _, key = person(gateway)
    with pytest.raises(MCPError) as failed:
        run(call(gateway, key, "invalid__echo", {"text": "x"}))
    assert failed.value.data["category"] == "protocol_error" and "invalid result" in failed.value.message


def test_servers_that_never_start_answer_unavailable(gateway):
    _, key = person(gateway)
    for server, expected in (("silent", "handshake"), ("missing", "not found")):
        with pytest.raises(MCPError) as failed:
            run(call(gateway, key, f"{server}__echo", {"text": "x"}))
        assert expected in failed.value.message, failed.value.message
    with pytest.raises(MCPError) as listing:
        run(names(gateway, key, "/mcp/silent"))
    assert "silent" in listing.value.message


def test_check_reports_each_step_with_latency(gateway):
    passed = corral_cli(gateway, gateway["admin"], "mcp", "check", "notes")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "pass  connect" in passed.stdout and "pass  input schemas" in passed.stdout
    assert "notes: passed" in passed.stdout
    failed = corral_cli(gateway, gateway["admin"], "mcp", "check", "silent")
    assert failed.returncode == 1 and "FAIL  connect" in failed.stdout
    unknown = corral_cli(gateway, gateway["admin"], "mcp", "check", "nope")
    assert unknown.returncode == 1 and "no MCP server named 'nope'" in unknown.stderr


# ---- overrides -----------------------------------------------------------------------------------


def test_read_only_override_routes_to_the_twin_and_hides_writes(gateway):
    email, key = person(gateway)
    added = httpx.post(gateway["url"] + "/api/v1/overrides", json={
        "kind": "read_only", "target": f"user:{email}", "ttl_seconds": 3600, "reason": "incident drill"},
        headers=admin(gateway), timeout=10)
    assert added.status_code == 201, added.text
    try:
        found = run(names(gateway, key, "/mcp/notes"))
        assert found == ["add", "echo", "fail", "sleep", "whoami"]
        # notes-ro does not get the notes server's env: its whoami is the default
        assert text(run(call(gateway, key, "whoami", path="/mcp/notes"))) == "anonymous"
        with pytest.raises(MCPError):
            run(call(gateway, key, "write_note", {"name": "n", "body": "b"}, path="/mcp/notes"))
    finally:
        httpx.delete(gateway["url"] + f"/api/v1/overrides/{added.json()['id']}", headers=admin(gateway), timeout=10)


def test_disable_tool_override_hides_and_refuses_it(gateway):
    _, key = person(gateway)
    added = httpx.post(gateway["url"] + "/api/v1/overrides", json={
        "kind": "disable_tool", "target": "web/add", "ttl_seconds": 3600, "reason": "bad sums"},
        headers=admin(gateway), timeout=10)
    assert added.status_code == 201, added.text
    try:
        assert "web__add" not in run(names(gateway, key))
        with pytest.raises(MCPError) as refused:
            run(call(gateway, key, "web__add", {"a": 1, "b": 2}))
        assert "disabled" in refused.value.message
    finally:
        httpx.delete(gateway["url"] + f"/api/v1/overrides/{added.json()['id']}", headers=admin(gateway), timeout=10)


# ---- bad input ---------------------------------------------------------------------------------


def post(gateway, body, key=None, path="/mcp", **headers):
    return httpx.post(gateway["url"] + path, content=body if isinstance(body, (str, bytes)) else json.dumps(body),
                      headers={"Authorization": f"Bearer {key or gateway['admin']}", "Content-Type": "application/json",
                               "Accept": "application/json, text/event-stream", **headers}, timeout=10)


def test_unauthenticated_and_forged_keys_get_json_rpc_errors(gateway):
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    missing = httpx.post(gateway["url"] + "/mcp", json=ping, timeout=10)
    assert missing.status_code == 401 and missing.json()["error"]["code"] == -32013
    assert "Bearer" in missing.json()["error"]["message"]
    forged = post(gateway, ping, key="ck_" + "A" * 49)
    assert forged.status_code == 401 and "jsonrpc" in forged.json()
    email, _ = person(gateway)
    read_only_key = httpx.post(gateway["url"] + "/api/v1/keys", json={"user": email, "scopes": ["read"]},
                               headers=admin(gateway), timeout=10).json()["key"]
    scoped = post(gateway, ping, key=read_only_key)
    assert scoped.status_code == 403 and "gateway" in scoped.json()["error"]["message"]


def test_malformed_json_rpc_and_unknown_methods(gateway):
    broken = post(gateway, "{not json", **{"MCP-Protocol-Version": "2025-11-25"})
    assert broken.status_code == 400 and broken.json()["error"]["code"] == -32700
    envelope = {"_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                          "io.modelcontextprotocol/clientCapabilities": {}}}
    no_envelope = post(gateway, {"jsonrpc": "2.0", "id": 6, "method": "tools/list", "params": {}},
                       **{"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/list"})
    assert no_envelope.json()["error"]["code"] == -32602 and "_meta" in no_envelope.json()["error"]["message"]
    unknown = post(gateway, {"jsonrpc": "2.0", "id": 7, "method": "tools/explode", "params": envelope},
                   **{"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/explode"})
    assert unknown.json()["error"]["code"] == -32601, unknown.json()
    nested = post(gateway, {"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": {"name": 5, **envelope}},
                  **{"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call"})
    assert nested.json()["error"]["code"] in (-32602, -32600, -32020)  # the SDK's checks: params, headers


def test_oversized_arguments_are_refused(gateway):
    _, key = person(gateway)
    with pytest.raises(MCPError) as refused:
        run(call(gateway, key, "notes__echo", {"text": "x" * 1_100_000}))
    assert "at most" in refused.value.message or refused.value.code == -32600


def test_a_session_belongs_to_the_user_who_opened_it(gateway):
    _, alice = person(gateway)
    _, mallory = person(gateway)
    opened = post(gateway, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}, key=alice)
    session = opened.headers["mcp-session-id"]
    stolen = post(gateway, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, key=mallory,
                  **{"Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"})
    assert stolen.status_code == 404 and "session not found" in stolen.json()["error"]["message"]
    unknown = post(gateway, {"jsonrpc": "2.0", "id": 3, "method": "tools/list"}, key=alice,
                   **{"Mcp-Session-Id": "made-up", "MCP-Protocol-Version": "2025-11-25"})
    assert unknown.status_code == 404


def test_a_disabled_server_is_probed_after_its_cool_down_and_restored(gateway):
    _, key = person(gateway)
    state = gateway["state"] / "flaky.json"
    state.write_text(json.dumps({"crash": True}))
    for _ in range(2):
        with pytest.raises(MCPError):
            run(call(gateway, key, "flaky__echo", {"text": "x"}))
    with pytest.raises(MCPError) as disabled:
        run(call(gateway, key, "flaky__echo", {"text": "x"}))
    assert "temporarily disabled" in disabled.value.message
    state.write_text(json.dumps({"crash": False}))  # the server is fixed
    time.sleep(4.5)  # the cool-down is over: the next call probes it
    assert text(run(call(gateway, key, "flaky__echo", {"text": "back"}))) == "echo: back"
    assert wait_for(lambda: [e for e in events(gateway, "mcp.server.restored") if e["resource"] == "flaky"])
    assert text(run(call(gateway, key, "flaky__echo", {"text": "again"}))) == "echo: again"


def modern(gateway, key, method, params, **headers):
    """One 2026-07-28 request, by hand, declaring elicitation as the client's capability."""
    envelope = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {"elicitation": {"form": {}}}}
    extra = {"Mcp-Name": params["name"]} if "name" in params else {}
    reply = post(gateway, {"jsonrpc": "2.0", "id": 1, "method": method, "params": {**params, "_meta": envelope}},
                 key=key, **{"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": method, **extra, **headers})
    return reply.json()


def test_a_client_cannot_confirm_by_itself_reuse_or_redirect_a_confirmation(gateway):
    _, key = person(gateway)
    accept = {"corral-confirm": {"action": "accept"}}
    arguments = {"name": "forged", "body": "b"}
    forged = modern(gateway, key, "tools/call", {"name": "web__write_note", "arguments": arguments,
                                                 "inputResponses": accept})
    assert "request_state Corral issued" in forged["error"]["message"]
    asked = modern(gateway, key, "tools/call", {"name": "web__write_note", "arguments": arguments})
    state = asked["result"]["requestState"]
    assert asked["result"]["resultType"] == "input_required" and "web/write_note" in json.dumps(asked["result"])
    other = modern(gateway, key, "tools/call", {"name": "web__write_note", "arguments": {"name": "x", "body": "evil"},
                                                "inputResponses": accept, "requestState": state})
    assert "for another call" in other["error"]["message"]
    _, mallory = person(gateway)
    stolen = modern(gateway, mallory, "tools/call", {"name": "web__write_note", "arguments": arguments,
                                                     "inputResponses": accept, "requestState": state})
    assert "for another call" in stolen["error"]["message"]
    confirmed = modern(gateway, key, "tools/call", {"name": "web__write_note", "arguments": arguments,
                                                    "inputResponses": accept, "requestState": state})
    assert confirmed["result"]["content"][0]["text"] == "wrote forged"
    replayed = modern(gateway, key, "tools/call", {"name": "web__write_note", "arguments": arguments,
                                                   "inputResponses": accept, "requestState": state})
    assert "used already" in replayed["error"]["message"]


def test_a_held_call_is_decided_again_once_approved(gateway):
    email, key = person(gateway)
    _, approver_key = person(gateway, roles=("approver",))
    thread, outcome = held_call(gateway, key, "notes__delete_note", {"name": "whatever"})
    [pending] = pending_for(gateway, email)
    added = httpx.post(gateway["url"] + "/api/v1/overrides", json={
        "kind": "disable_tool", "target": "notes/delete_note", "ttl_seconds": 3600, "reason": "incident"},
        headers=admin(gateway), timeout=10)
    try:
        approved = corral_cli(gateway, approver_key, "approvals", "approve", str(pending["id"]))
        assert approved.returncode == 0, approved.stderr
        thread.join(30)
        assert isinstance(outcome["error"], MCPError)
        assert "after it was approved" in outcome["error"].message and "disabled" in outcome["error"].message
    finally:
        httpx.delete(gateway["url"] + f"/api/v1/overrides/{added.json()['id']}", headers=admin(gateway), timeout=10)


def test_resources_and_prompts_pass_the_same_gate(gateway):
    _, key = person(gateway)

    async def browse(path, **headers):
        async with connect(gateway, key, path, headers=headers) as client:
            resources = await client.list_resources()
            read = await client.read_resource("note://readme")
            prompt = await client.get_prompt("greet" if path != "/mcp" else "web__greet", {"name": "Ada"})
            return resources, read, prompt

    resources, read, prompt = run(browse("/mcp/web"))
    assert [str(r.uri) for r in resources.resources] == ["note://readme"]
    assert read.contents[0].text == "hello from the test server"
    assert prompt.messages[0].content.text == "Hello, Ada"
    with pytest.raises(MCPError) as no_group:
        run(browse("/mcp/web", **{"X-Corral-Mode": "ask"}))
    assert "'mcp' tool group" in no_group.value.message
    added = httpx.post(gateway["url"] + "/api/v1/overrides", json={
        "kind": "disable_server", "target": "web", "ttl_seconds": 3600, "reason": "incident"},
        headers=admin(gateway), timeout=10)
    try:
        with pytest.raises(MCPError) as closed:
            run(browse("/mcp/web"))
        assert "disabled by an override" in closed.value.message
    finally:
        httpx.delete(gateway["url"] + f"/api/v1/overrides/{added.json()['id']}", headers=admin(gateway), timeout=10)
