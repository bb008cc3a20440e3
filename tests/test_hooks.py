"""The hook endpoints, `/v1/hooks/claude-code` and `/v1/hooks/cline`, driven by what the real
clients send: every recorded Claude Code hook input replays with a decision or a record, the
decisions on its commands are the policy engine's, refusals come back in each client's own terms,
approvals hold the call and let the agent's retry through once, and what the hooks report lands
in the task metrics. A server of its own runs the demo policy plus an approval rule."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from corral.clients.cline import hook_script
from corral.hooks.reading import HookCall, acts_of
from corral.identity.tokens import generate_key
from tests.conftest import BACKENDS, own_database, start_server, stop_server, unique
from tests.test_taskfolders import agent_fixture

ROOT = Path(__file__).resolve().parents[1]
CLAUDE_CODE, CLINE = "/v1/hooks/claude-code", "/v1/hooks/cline"
HOOK_WAIT_S = 1.5


def policy_text(**clients: Any) -> str:
    """The demo policy, with `terraform apply` held for an approver, `make build` allowed and
    short hook waits."""
    policy = yaml.safe_load((ROOT / "corral/policy/demo.yaml").read_text())
    policy["rules"].insert(0, {"id": "builds-allowed", "effect": "allow", "action": "command.exec",
                               "match": {"command": "make build*"}})
    policy["rules"].insert(0, {"id": "terraform-needs-approval", "effect": "approve", "action": "command.exec",
                               "match": {"command": "terraform apply*"}})
    policy["clients"] = {"hook_wait_s": HOOK_WAIT_S, **clients}
    return yaml.safe_dump(policy, sort_keys=False)


@contextmanager
def serving(tmp_path_factory, backend: str, **clients: Any) -> Iterator[dict[str, Any]]:
    data_dir = tmp_path_factory.mktemp(f"hooks-{backend}")
    (data_dir / "policy.yaml").write_text(policy_text(**clients))
    admin_key = generate_key()
    with own_database(backend, data_dir) as database_url:
        process, url, _ = start_server(data_dir, database_url, {"CORRAL_ADMIN_KEY": admin_key,
                                                                "CORRAL_POLICY": str(data_dir / "policy.yaml")})
        try:
            yield {"url": url, "admin": admin_key, "backend": backend}
        finally:
            stop_server(process)


@pytest.fixture(scope="module", params=BACKENDS)
def corral(request, tmp_path_factory):
    with serving(tmp_path_factory, request.param) as found:
        yield found


def call(corral: dict[str, Any], path: str, body: Any, key: str | None, **params: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(corral["url"] + path, content=content, headers={**headers, "content-type": "application/json"},
                      params=params, timeout=30)


def person(corral: dict[str, Any], roles: tuple[str, ...] = ("developer",), teams: tuple[str, ...] = ("platform",),
           scopes: list[str] | None = None) -> tuple[str, str]:
    admin = {"Authorization": f"Bearer {corral['admin']}"}
    email = f"{unique('dev')}@example.com"
    for team in teams:
        httpx.post(corral["url"] + "/api/v1/teams", json={"name": team}, headers=admin, timeout=10)
    created = httpx.post(corral["url"] + "/api/v1/users", json={"email": email, "roles": list(roles),
                                                                 "teams": list(teams)}, headers=admin, timeout=10)
    assert created.status_code == 201, created.text
    key = httpx.post(corral["url"] + "/api/v1/keys", json={"user": email, **({"scopes": scopes} if scopes else {})},
                     headers=admin, timeout=10)
    return email, key.json()["key"]


def decision(response: httpx.Response) -> tuple[str, str]:
    assert response.status_code == 200, response.text
    output = response.json()["hookSpecificOutput"]
    assert output["hookEventName"] == "PreToolUse"
    return output["permissionDecision"], output["permissionDecisionReason"]


def events_of(corral: dict[str, Any], email: str, want: int) -> list[dict[str, Any]]:
    """The user's events from the hooks, once `want` of them are written (events are batched)."""
    deadline = time.monotonic() + 10
    while True:
        found = httpx.get(corral["url"] + "/api/v1/events", params={"user": email, "limit": 1000},
                          headers={"Authorization": f"Bearer {corral['admin']}"}, timeout=10)
        events = [event for event in found.json()["events"] if event["source"] == "hooks"]
        if len(events) >= want or time.monotonic() > deadline:
            return events
        time.sleep(0.1)


def recorded(name: str) -> list[dict[str, Any]]:
    return json.loads(agent_fixture(f"claude-code/{name}").read_text())


# ---- Claude Code -----------------------------------------------------------------------------


def test_every_recorded_claude_code_hook_replays_and_commands_are_decided_like_the_engine(corral):
    email, key = person(corral)
    pre, post = recorded("pre_tool_use.json"), recorded("post_tool_use.json")
    others = [*recorded("user_prompt_submit.json"), *recorded("stop.json"), *recorded("subagent_stop.json"),
              *recorded("notification.json")]
    answers = Counter()
    for payload in pre:
        effect, reason = decision(call(corral, CLAUDE_CODE, payload, key))
        answers[(payload["tool_name"], effect)] += 1
        if payload["tool_name"] == "Bash":  # the engine's answer for the same command and person
            engine = httpx.post(corral["url"] + "/api/v1/decide", json={
                "action": "command.exec", "resource": payload["tool_input"]["command"], "client": "claude-code"},
                headers={"Authorization": f"Bearer {key}"}, timeout=10).json()
            assert effect == {"allow": "allow", "confirm": "ask", "deny": "deny"}[engine["effect"]], payload
            assert reason == engine["reason"]
    # Read is file.read (allowed by default); Write and Edit are file.write inside the workspace
    # (confirm by default: Claude Code asks). Of the 36 commands, 5 are readers the demo policy's
    # read-only-commands allows: `cat` twice, `ls -la` twice and `git status`; the other 31
    # (`uv run ...`, `echo "" >> FILE && ...`, `find ... | head`, `git init && git commit`)
    # match no rule, and command.exec defaults to confirm.
    assert answers[("Read", "allow")] == 8 and answers[("Write", "ask")] == 12 and answers[("Edit", "ask")] == 3
    assert (answers[("Bash", "allow")], answers[("Bash", "ask")]) == (5, 31)
    for payload in [*post, *others]:
        response = call(corral, CLAUDE_CODE, payload, key)
        assert response.status_code == 200 and response.json() == {}, response.text
    events = events_of(corral, email, 59 + 41 + len(others))
    kinds = Counter(event["kind"] for event in events)
    # 36 Bash calls decided, and 23 other tools; PostToolUse: 18 commands and 23 other results;
    # 3 prompts; Stop completes the session; SubagentStop and Notification are kept as messages.
    assert kinds["tool.call"] == 59 and kinds["command.exec"] == 18 and kinds["tool.result"] == 23
    assert kinds["user.prompt"] == len(recorded("user_prompt_submit.json"))
    assert kinds["task.completed"] == len(recorded("stop.json"))
    assert {event["task_id"] for event in events} == {"71df9206-5919-4682-bbb3-139b228e08a9"}
    stored = json.dumps(events)
    assert "Configuration management for MCP Venus OS" not in stored  # a Write's content is never kept
    reads = [event for event in events if event["kind"] == "tool.call" and event["action"] == "file.read"]
    assert reads[0]["resource"].startswith("src/mcp_venus_os/")  # relative to the session's cwd


def hook_decisions(corral: dict[str, Any], decision: str) -> float:
    """corral_hook_decisions_total for one decision, summed over teams and clients."""
    text = httpx.get(corral["url"] + "/metrics", headers={"Authorization": f"Bearer {corral['admin']}"}, timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("corral_hook_decisions_total{") and f'decision="{decision}"' in line)


def test_denied_asked_and_allowed_commands(corral):
    _, key = person(corral)
    denied_before, allowed_before = hook_decisions(corral, "deny"), hook_decisions(corral, "allow")
    def bash(command: str, cwd: str = "/home/dev/repo") -> tuple[str, str]:
        return decision(call(corral, CLAUDE_CODE, {"hook_event_name": "PreToolUse", "session_id": "s1", "cwd": cwd,
                                                   "tool_name": "Bash", "tool_input": {"command": command},
                                                   "tool_use_id": "t1"}, key))
    effect, reason = bash("rm -rf build")  # the recorded run's command: no-destructive-commands
    assert effect == "deny" and "no-destructive-commands" in reason
    assert bash("ls")[0] == "allow"
    assert bash("ls && rm -rf /")[0] == "deny"  # every part of a chain is decided
    assert bash("git status | tee out.txt")[0] == "ask"  # tee writes a file: not a reader
    assert bash("npm test")[0] == "ask"  # command.exec defaults to confirm
    # Prometheus counts the decisions: rm -rf and the chain denied, ls allowed.
    assert (hook_decisions(corral, "deny") - denied_before, hook_decisions(corral, "allow") - allowed_before) == (2, 1)


def test_the_ledger_holds_decisions_that_let_something_change_refusals_and_results(corral):
    email, key = person(corral)
    session = unique("ledgered")
    def pre(command: str) -> str:
        return decision(call(corral, CLAUDE_CODE, {"hook_event_name": "PreToolUse", "session_id": session,
                                                   "tool_name": "Bash", "tool_input": {"command": command}}, key))[0]
    assert (pre("make build"), pre("rm -rf build"), pre("git status"), pre("npm test")) == (
        "allow", "deny", "allow", "ask")
    call(corral, CLAUDE_CODE, {"hook_event_name": "PostToolUse", "session_id": session, "tool_name": "Bash",
                               "tool_input": {"command": "make build"}, "tool_response": {}}, key)
    call(corral, CLAUDE_CODE, {"hook_event_name": "PostToolUse", "session_id": session, "tool_name": "Bash",
                               "tool_input": {"command": "git status"}, "tool_response": {}}, key)
    deadline, found = time.monotonic() + 10, []
    while len(found) < 4 and time.monotonic() < deadline:  # refusals and results are appended soon after
        found = httpx.get(corral["url"] + "/api/v1/audit/records", params={"actor": email},
                          headers={"Authorization": f"Bearer {corral['admin']}"}, timeout=10).json()["records"]
    # `git status` is a reader: neither its decision nor its result is ledgered.
    assert sorted((item["action"], item["resource"], item["decision"] or "", item["outcome"]) for item in found) == [
        ("command.exec", "make build", "", "ok"), ("command.exec", "make build", "allow", "allowed"),
        ("command.exec", "npm test", "confirm", "asked"), ("command.exec", "rm -rf build", "deny", "denied")]


def test_files_are_decided_on_their_path_inside_the_workspace(corral):
    _, key = person(corral)
    def tool(name: str, tool_input: dict[str, Any]) -> str:
        return decision(call(corral, CLAUDE_CODE, {"hook_event_name": "PreToolUse", "session_id": "s2",
                                                   "cwd": "/home/dev/repo", "tool_name": name,
                                                   "tool_input": tool_input}, key))[0]
    assert tool("Read", {"file_path": "/home/dev/repo/src/app.py"}) == "allow"
    assert tool("Write", {"file_path": "/home/dev/repo/src/app.py", "content": "x"}) == "ask"
    assert tool("Grep", {"pattern": "TODO"}) == "allow"  # reads the workspace
    assert tool("TodoWrite", {"todos": []}) == "allow"  # acts on nothing the policy governs
    # A tool Corral does not know: the policy's default (deny in the demo policy).
    effect = tool("TeleportFiles", {"to": "elsewhere"})
    assert effect == "deny"
    # MCP tools through Corral's /mcp (mcp__corral__server__tool) are the server's tools.
    assert tool("mcp__corral__everything__echo", {"message": "hi"}) == "allow"  # classified read-only
    held = decision(call(corral, CLAUDE_CODE, {"hook_event_name": "PreToolUse", "session_id": "s2",
                                               "tool_name": "mcp__corral__tracker__delete_issue",
                                               "tool_input": {"id": 1}}, key))
    # Classified destructive: approve. Nobody decides within the hook's wait, so it is refused
    # with the approval to ask for (see the approval tests for the rest).
    assert held[0] == "deny" and "is waiting for an approver" in held[1]


def test_refusals_when_the_key_is_missing_forged_or_revoked(corral):
    email, key = person(corral)
    payload = {"hook_event_name": "PreToolUse", "session_id": "s3", "tool_name": "Read",
               "tool_input": {"file_path": "README.md"}}
    effect, reason = decision(call(corral, CLAUDE_CODE, payload, None))
    assert effect == "deny" and "credentials" in reason
    assert decision(call(corral, CLAUDE_CODE, payload, generate_key()))[0] == "deny"
    assert decision(call(corral, CLAUDE_CODE, payload, key))[0] == "allow"
    admin = {"Authorization": f"Bearer {corral['admin']}"}
    keys = httpx.get(corral["url"] + "/api/v1/keys", params={"user": email}, headers=admin, timeout=10).json()["keys"]
    httpx.post(corral["url"] + f"/api/v1/keys/{keys[0]['id']}/revoke", headers=admin, timeout=10)
    assert decision(call(corral, CLAUDE_CODE, payload, key))[0] == "deny"
    # A prompt with a revoked key is blocked; a report hook gets a non-blocking 401.
    prompt = call(corral, CLAUDE_CODE, {"hook_event_name": "UserPromptSubmit", "session_id": "s3", "prompt": "hi"}, key)
    assert prompt.status_code == 200 and prompt.json()["decision"] == "block"
    stop = call(corral, CLAUDE_CODE, {"hook_event_name": "Stop", "session_id": "s3"}, key)
    assert stop.status_code == 401 and "revoked" in stop.json()["error"]["message"]


def test_input_corral_cannot_read_is_refused_when_the_policy_fails_closed(corral):
    _, key = person(corral)
    for body in (b"{not json", b"[1, 2]", json.dumps({"session_id": "no event name"}).encode(), b"\xff\xfe"):
        effect, reason = decision(call(corral, CLAUDE_CODE, body, key))
        assert effect == "deny" and "could not read" in reason
    cline = call(corral, CLINE, b"{not json", key, hook="PreToolUse")
    assert cline.json()["cancel"] is True and "could not read" in cline.json()["errorMessage"]
    # Unknown hook events are kept, not refused.
    assert call(corral, CLAUDE_CODE, {"hook_event_name": "SomethingNew", "session_id": "s4"}, key).json() == {}
    wrong_method = httpx.get(corral["url"] + CLAUDE_CODE, timeout=10)
    assert wrong_method.status_code == 200 and decision(wrong_method)[0] == "deny"


@pytest.fixture(scope="module")
def failing_open(tmp_path_factory):
    with serving(tmp_path_factory, "sqlite", fail_open=True) as found:
        yield found


def test_input_corral_cannot_read_is_a_non_blocking_error_when_the_policy_fails_open(failing_open):
    _, key = person(failing_open)
    response = call(failing_open, CLAUDE_CODE, b"{not json", key)
    assert response.status_code == 400 and "could not read" in response.json()["error"]["message"]
    cline = call(failing_open, CLINE, b"{not json", key, hook="PreToolUse")
    assert cline.status_code == 400 and cline.json()["cancel"] is False
    # A missing key is still refused: failing open is for what Corral cannot read, not for who asks.
    payload = {"hook_event_name": "PreToolUse", "session_id": "s5", "tool_name": "Read", "tool_input": {"file_path": "a"}}
    assert decision(call(failing_open, CLAUDE_CODE, payload, None))[0] == "deny"


# ---- approvals ------------------------------------------------------------------------------


def approve_soon(corral: dict[str, Any], approver_key: str, requester: str, tool_input: dict[str, Any]) -> threading.Thread:
    """Approve the requester's pending call as soon as it appears."""
    def run() -> None:
        headers = {"Authorization": f"Bearer {approver_key}"}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pending = httpx.get(corral["url"] + "/api/v1/approvals", headers=headers, timeout=10).json()["approvals"]
            mine = [item for item in pending if item["requested_by"] == requester and item["arguments"] == tool_input]
            if mine:
                httpx.post(corral["url"] + f"/api/v1/approvals/{mine[0]['id']}/approve", headers=headers, timeout=10)
                return
            time.sleep(0.05)
    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_an_approved_command_runs_and_the_approval_is_spent(corral):
    email, key = person(corral)
    _, approver = person(corral, roles=("approver",), scopes=["gateway", "read", "policy"])
    command = {"command": f"terraform apply -target={unique('module')}"}
    payload = {"hook_event_name": "PreToolUse", "session_id": "s6", "tool_name": "Bash", "tool_input": command}
    thread = approve_soon(corral, approver, email, command)
    effect, reason = decision(call(corral, CLAUDE_CODE, payload, key))
    thread.join()
    assert effect == "allow" and "was given" in reason
    # The same call again needs a new approval: nobody approves it this time, so it is refused
    # with the approval's id once the hook's wait is over.
    effect, reason = decision(call(corral, CLAUDE_CODE, payload, key))
    assert effect == "deny" and "is waiting for an approver" in reason


def test_an_approval_given_after_the_hook_gave_up_lets_the_retry_through(corral):
    email, key = person(corral)
    _, approver = person(corral, roles=("approver",), scopes=["gateway", "read", "policy"])
    command = {"command": f"terraform apply -target={unique('module')}"}
    payload = {"hook_event_name": "PreToolUse", "session_id": "s7", "tool_name": "Bash", "tool_input": command}
    effect, reason = decision(call(corral, CLAUDE_CODE, payload, key))
    assert effect == "deny" and "is waiting for an approver" in reason
    approval_id = int(re.search(r"approval (\d+) for this Bash call", reason)[1])
    # Retrying before anyone decided waits on the same approval, not a new one.
    assert f"approval {approval_id} " in decision(call(corral, CLAUDE_CODE, payload, key))[1]
    approved = httpx.post(corral["url"] + f"/api/v1/approvals/{approval_id}/approve",
                          headers={"Authorization": f"Bearer {approver}"}, timeout=10)
    assert approved.status_code == 200, approved.text
    other = {**payload, "tool_input": {"command": command["command"] + " -auto-approve"}}
    assert decision(call(corral, CLAUDE_CODE, other, key))[0] == "deny"  # another command: not approved
    assert decision(call(corral, CLAUDE_CODE, payload, key)) == ("allow", f"approval {approval_id} was given")
    status = httpx.get(corral["url"] + f"/api/v1/approvals/{approval_id}",
                       headers={"Authorization": f"Bearer {corral['admin']}"}, timeout=10).json()["status"]
    assert status == "used"


# ---- Cline ------------------------------------------------------------------------------------


def cline_payloads() -> dict[str, dict[str, Any]]:
    """The Cline CLI's recorded hook inputs, by the hook file that sent them."""
    lines = agent_fixture("cline-cli/hook-payloads.jsonl").read_text().splitlines()
    return {item["hook_file"]: item["payload"] for item in map(json.loads, lines)}


def test_cline_hooks_cancel_a_denied_command_and_record_the_task(corral):
    email, key = person(corral)
    recorded_cli = cline_payloads()
    started = call(corral, CLINE, recorded_cli["TaskStart"], key, hook="TaskStart")
    assert started.status_code == 200 and started.json() == {"cancel": False}
    # The recorded PreToolUse: run_commands ["rm -rf build"].
    refused = call(corral, CLINE, recorded_cli["PreToolUse"], key, hook="PreToolUse").json()
    assert refused["cancel"] is True and "no-destructive-commands" in refused["errorMessage"]
    allowed = {**recorded_cli["PreToolUse"], "tool_call": {"id": "c2", "name": "run_commands",
                                                          "input": {"commands": ["ls", "git status"]}}}
    assert call(corral, CLINE, allowed, key, hook="PreToolUse").json() == {"cancel": False}
    # The VS Code extension's form: parameters as text, hookName naming the hook.
    extension = {"hookName": "PreToolUse", "taskId": "1760534080239", "workspaceRoots": ["/home/dev/repo"],
                 "preToolUse": {"toolName": "execute_command", "parameters": {"command": "npm test",
                                                                             "requires_approval": "false"}}}
    asked = call(corral, CLINE, extension, key).json()
    assert asked["cancel"] is True and "cannot ask" in asked["errorMessage"]  # confirm: Cline's hooks cannot ask
    finished = {"hookName": "PostToolUse", "taskId": "1760534080239", "postToolUse": {
        "toolName": "execute_command", "parameters": {"command": "ls"}, "result": "a\nb", "success": True,
        "executionTimeMs": 12}}
    assert call(corral, CLINE, finished, key).json() == {"cancel": False}
    done = {"hookName": "TaskComplete", "taskId": "1760534080239", "taskComplete": {}}
    assert call(corral, CLINE, done, key).json() == {"cancel": False}
    events = events_of(corral, email, 6)
    kinds = Counter((event["kind"], event["task_id"]) for event in events)
    assert kinds[("task.started", "conv_1795677109285_0dpk2qg")] == 1
    assert kinds[("command.exec", "1760534080239")] == 1 and kinds[("task.completed", "1760534080239")] == 1
    denied = [event for event in events if event["kind"] == "tool.call" and event["outcome"] == "denied"]
    assert {event["resource"] for event in denied} == {"rm -rf build", "npm test"}


def test_the_cline_hook_script_blocks_a_denied_command_through_corral(corral, tmp_path):
    """The script `corral connect cline` writes, run as Cline runs it: the recorded PreToolUse
    (`rm -rf build`) on its stdin, the user's key in corral.key beside it."""
    _, key = person(corral)
    script = hook_script(corral["url"], False)
    for name in ("PreToolUse", "PostToolUse"):
        (tmp_path / name).write_text(script)
        (tmp_path / name).chmod(0o700)
    (tmp_path / "corral.key").write_text(key + "\n")
    environment = {name: value for name, value in os.environ.items() if name != "CORRAL_KEY"}

    def run(name: str, payload: dict[str, Any]) -> dict[str, Any]:
        result = subprocess.run([str(tmp_path / name)], input=json.dumps(payload), capture_output=True, text=True,
                                timeout=60, env=environment)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)
    refused = run("PreToolUse", cline_payloads()["PreToolUse"])
    assert refused["cancel"] is True and "no-destructive-commands" in refused["errorMessage"]
    reader = {**cline_payloads()["PreToolUse"], "tool_call": {"id": "c3", "name": "run_commands",
                                                              "input": {"commands": ["ls -la"]}}}
    assert run("PreToolUse", reader) == {"cancel": False}
    (tmp_path / "corral.key").write_text(generate_key() + "\n")  # a key Corral never issued
    forged = run("PreToolUse", reader)
    assert forged["cancel"] is True and "credentials" in forged["errorMessage"]


def test_a_cline_hook_named_wrongly_is_refused_in_words(corral):
    _, key = person(corral)
    response = call(corral, CLINE, {"taskId": "t"}, key, hook="../../etc")
    assert response.json()["cancel"] is True and "names a hook file" in response.json()["errorMessage"]


# ---- into the metrics ------------------------------------------------------------------------


def test_a_session_seen_only_by_hooks_is_a_completed_task_in_the_metrics(corral):
    email, key = person(corral)
    session = unique("session")
    for payload in (
            {"hook_event_name": "SessionStart", "session_id": session, "source": "startup"},
            {"hook_event_name": "UserPromptSubmit", "session_id": session, "prompt": "fix the build"},
            {"hook_event_name": "PostToolUse", "session_id": session, "tool_name": "Bash",
             "tool_input": {"command": "make"}, "tool_response": {"stdout": ""}, "duration_ms": 900},
            {"hook_event_name": "PostToolUseFailure", "session_id": session, "tool_name": "Bash",
             "tool_input": {"command": "make test"}, "error": "Command timed out after 2m"},
            {"hook_event_name": "Stop", "session_id": session}):
        assert call(corral, CLAUDE_CODE, payload, key).status_code == 200
    events_of(corral, email, 5)
    summary = httpx.get(corral["url"] + "/api/v1/metrics/summary", params={"user": email, "window": "1h"},
                        headers={"Authorization": f"Bearer {corral['admin']}"}, timeout=30).json()
    volumes = summary["volumes"]
    assert (volumes["tasks"], volumes["completed"], volumes["commands"], volumes["call_timeouts"]) == (1, 1, 2, 1)
    assert summary["metrics"]["tool_error_rate"] == {"value": 0.5, "samples": 2}


# ---- what a tool use stands for (no server) ---------------------------------------------------


def test_what_each_tool_use_stands_for():
    def acts(tool: str, tool_input: dict[str, Any], client: str = "claude-code") -> list[tuple[str, str]] | None:
        found = acts_of(HookCall(client=client, hook="PreToolUse", stage="pre_tool", tool=tool, tool_input=tool_input,
                                 cwd="/home/dev/repo"))
        return None if found is None else [(act.action, act.resource) for act in found]
    assert acts("Bash", {"command": "ls && rm x"}) == [("command.exec", "ls && rm x")]  # the engine splits chains
    assert acts("Write", {"file_path": "/home/dev/repo/src/a.py", "content": "x"}) == [("file.write", "src/a.py")]
    assert acts("Write", {"file_path": "/etc/passwd", "content": "x"}) == [("file.write", "/etc/passwd")]
    assert acts("Read", {"file_path": "../other/x"}) == [("file.read", "/home/dev/other/x")]  # outside: absolute
    assert acts("Edit", {"file_path": "/home/dev/repo-evil/a"}) == [("file.write", "/home/dev/repo-evil/a")]
    assert acts("mcp__corral__github__create_issue", {}) == [("tool.call", "github/create_issue")]
    assert acts("mcp__github__create_issue", {}) == [("tool.call", "github/create_issue")]
    assert acts("run_commands", {"commands": ["npm ci", "npm test"]}, "cline") == [
        ("command.exec", "npm ci"), ("command.exec", "npm test")]
    assert acts("new_rule", {"path": ".clinerules/x.md", "content": "y"}, "cline") == [("file.write", ".clinerules/x.md")]
    assert acts("use_mcp_tool", {"server_name": "github", "tool_name": "merge_pr"}, "cline") == [
        ("tool.call", "github/merge_pr")]
    assert acts("TodoWrite", {"todos": []}) == []
    assert acts("TeleportFiles", {}) is None  # unknown: the policy's default decides
    assert acts("Bash", {}) is None and acts("Bash", {"command": "  "}) is None  # nothing to decide on
