"""Reading Roo Code and Cline task folders into events (corral.ingest.taskfolders and
corral.ingest.taskmessages), checked against task folders the real agents wrote. Every expected
number below was counted by hand in the raw files (the jq or reading named beside it), never by
running the code under test. Then: snapshots of a growing task add events and never change one,
and bad input is reported in words while the rest is read."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from corral.ingest.schema import IngestEvent
from corral.ingest.taskfolders import discover, read_task
from corral.ingest.taskmessages import TaskInfo, derive, read_messages
from corral.metrics.fold import fold_lifecycle, new_task

ROOT = Path(__file__).resolve().parent.parent


def agent_fixture(relative: str) -> Path:
    """A real agent's file: from tests/fixtures/agents when copied there, else the team's shared
    fixtures beside the checkout (see their README for where each comes from)."""
    for base in (ROOT / "tests/fixtures/agents", ROOT.parent / "shared/fixtures/agents"):
        if (base / relative).exists():
            return base / relative
    raise AssertionError(f"the agent fixture {relative} is missing: copy it from shared/fixtures/agents "
                         "into tests/fixtures/agents")


ROO_COMMANDS = "roo-code/e73ea764-4971-4adb-9197-52c2f8ede8ef"  # code mode: commands, MCP, condensing
ROO_ORCHESTRATOR = "roo-code/bc93a6f7-cd2e-4686-a832-46e3cd14d338"  # subtasks, a completion, then more work
CLINE = "cline/ui_messages.json"  # plan then act: commands, checkpoints, failing MCP calls
CLINE_EARLIER = "cline/MCP__ui_messages.json"  # the same task 368 messages in


def task_events(path: Path, client: str) -> tuple[list[dict[str, Any]], Any]:
    found = discover(path)
    assert not found.problems and len(found.tasks) == 1, found
    read = read_task(found.tasks[0], client)
    assert not read.problems and read.derivation is not None, read.problems
    return read.derivation.events, read.derivation


def of_kind(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [event for event in events if event["kind"] == kind]


def outcome_of(events: list[dict[str, Any]]) -> str | None:
    """The task's outcome as the metrics fold it from these events (None: still open)."""
    rows = [{**event, "time": datetime.fromtimestamp(event["time"] / 1000, timezone.utc), "user_email": "a@example.com"}
            for event in events]
    task = new_task(rows[0])
    for row in rows:
        fold_lifecycle(task, row)
    return task.outcome


def assert_ingestible(events: list[dict[str, Any]]) -> None:
    """Every event is one the ingest API takes, and no two share a key."""
    for event in events:
        IngestEvent.model_validate(event)
    assert len({event["key"] for event in events}) == len(events)


# ---- real tasks ---------------------------------------------------------------------------


def test_a_roo_code_task_with_commands_mcp_calls_and_condensing():
    events, derivation = task_events(agent_fixture(ROO_COMMANDS), "roo")
    assert_ingestible(events)
    assert derivation.task_id == "e73ea764-4971-4adb-9197-52c2f8ede8ef"  # the folder's name
    requests = of_kind(events, "llm.request")
    model_requests = [event for event in requests if (event.get("attributes") or {}).get("purpose") != "condense"]
    # jq '[.[]|select(.say=="api_req_started")]|length' -> 24, each with tokens and a cost; plus the
    # 2 `condense_context` messages, each a model request whose cost is in contextCondense.cost.
    assert len(model_requests) == 24 and len(requests) == 26
    assert {event["outcome"] for event in requests} == {"ok"}
    # jq '[.[]|select(.say=="api_req_started")|.text|fromjson|.cost]|add' -> 3.4274570399999997,
    # tokensIn add -> 2354158, tokensOut add -> 16723; condense costs 0.1218748125 + 0.143115.
    assert sum(event["cost_usd"] for event in model_requests) == pytest.approx(3.42745704)
    assert sum(event["tokens_in"] for event in model_requests) == 2354158
    assert sum(event["tokens_out"] for event in model_requests) == 16723
    assert sum(event["cost_usd"] for event in requests) == pytest.approx(3.42745704 + 0.1218748125 + 0.143115)
    # Every <environment_details> says <slug>code</slug> and <model>anthropic/claude-sonnet-4</model>;
    # apiProtocol is "openai" (the only provider hint a Roo folder holds).
    assert {event["mode"] for event in events} == {"code"}
    assert {event["attributes"]["model"] for event in model_requests} == {"anthropic/claude-sonnet-4"}
    assert {event["attributes"]["provider"] for event in model_requests} == {"openai"}
    # 11 `ask: command`; the last one (message 360) is still streaming its output when the file
    # ends (no `say: command_output`, no later request), so 10 commands are final. The request
    # after each says "Exit code: 0" eight times and "Exit code: 1" twice (messages 18 and 215).
    commands = of_kind(events, "command.exec")
    assert len(commands) == 10 and derivation.waiting == Counter({"a command still running": 1})
    assert Counter(event["outcome"] for event in commands) == {"ok": 8, "error": 2}
    assert [event["attributes"]["exit_code"] for event in commands if event["outcome"] == "error"] == [1, 1]
    assert [event["time"] for event in commands if event["outcome"] == "error"] == [1758821722539, 1758821891018]
    assert commands[0]["resource"].startswith('powershell -c "Get-ChildItem -Path')
    # 4 `ask: use_mcp_server` (roo-state-manager), each answered by a response that is no error;
    # 9 `ask: tool` (todo lists and file writes), none a new task.
    tools = of_kind(events, "tool.result")
    mcp = [event for event in tools if "server" in event["attributes"]]
    assert len(mcp) == 4 and {event["outcome"] for event in mcp} == {"ok"}
    assert {event["resource"] for event in mcp} == {"roo-state-manager/search_tasks_semantic",
                                                    "roo-state-manager/list_conversations",
                                                    "roo-state-manager/get_task_tree"}
    assert len(tools) - len(mcp) == 9
    assert len(of_kind(events, "task.condensed")) == 2
    for kind in ("checkpoint.saved", "task.rolled_back", "task.subtask", "task.completed", "task.failed",
                 "task.abandoned"):
        assert not of_kind(events, kind), kind
    # The first message (the task) and 4 `say: user_feedback`.
    assert len(of_kind(events, "user.prompt")) == 5
    started = of_kind(events, "task.started")
    assert len(started) == 1 and started[0]["time"] == 1758821676913 and started[0]["mode"] == "code"
    assert started[0]["attributes"]["model"] == "anthropic/claude-sonnet-4"
    assert outcome_of(events) is None  # no completion: the metrics will call it abandoned once idle


def test_a_roo_code_orchestrator_task_with_subtasks():
    events, derivation = task_events(agent_fixture(ROO_ORCHESTRATOR), "roo")
    assert_ingestible(events)
    requests = of_kind(events, "llm.request")
    # 30 api_req_started: cost add -> 2.90000775, tokensIn add -> 285, tokensOut add -> 16461.
    assert len(requests) == 30 and {event["outcome"] for event in requests} == {"ok"}
    assert sum(event["cost_usd"] for event in requests) == pytest.approx(2.90000775)
    assert sum(event["tokens_in"] for event in requests) == 285
    assert sum(event["tokens_out"] for event in requests) == 16461
    # The last environment block of each request's text: 15 times code, then 15 times orchestrator;
    # <model>claude-sonnet-4-20250514</model> in all; apiProtocol "anthropic".
    assert [event["mode"] for event in requests] == ["code"] * 15 + ["orchestrator"] * 15
    assert {event["resource"] for event in requests} == {"claude-sonnet-4-20250514"}
    assert {event["attributes"]["provider"] for event in requests} == {"anthropic"}
    # 22 `ask: tool`: 6 newTask (architect, debug, code, debug, code, architect) and 16 updateTodoList.
    subtasks = of_kind(events, "task.subtask")
    assert [event["attributes"]["child_mode"] for event in subtasks] == [
        "🏗️ Architect", "🪲 Debug", "💻 Code", "🪲 Debug", "💻 Code", "🏗️ Architect"]
    tools = of_kind(events, "tool.result")
    assert Counter(event["resource"] for event in tools) == {
        "updateTodoList": 16, "roo-state-manager/list_conversations": 1, "roo-state-manager/scan_orphan_tasks": 1,
        "roo-state-manager/examine_roo_global_state": 1}
    assert {event["outcome"] for event in tools} == {"ok"}
    # One completion_result (message 53), then the user's feedback (55) took the task up again;
    # it ends on `ask: resume_task` with no second completion: open.
    assert [event["time"] for event in of_kind(events, "task.completed")] == [1758115961495]
    assert [event["time"] for event in of_kind(events, "task.resumed")] == [1758116445089]
    assert outcome_of(events) is None
    assert len(of_kind(events, "user.prompt")) == 9  # the task and 8 user_feedback
    assert of_kind(events, "task.started")[0]["time"] == 1758114661175
    assert derivation.waiting == Counter() and derivation.unknown == Counter()


def test_a_cline_task_planned_then_acted():
    events, derivation = task_events(agent_fixture(CLINE), "cline")
    assert_ingestible(events)
    assert derivation.task_id == "1760534080239"  # a lone file: its first message's ts
    requests = of_kind(events, "llm.request")
    # 61 api_req_started; the last one has cancelReason "user_cancelled" and zero tokens.
    # cost add -> 0.30950550000000004, tokensIn add -> 0, tokensOut add -> 23260.
    assert len(requests) == 61
    assert Counter(event["outcome"] for event in requests) == {"ok": 60, "cancelled": 1}
    assert sum(event["cost_usd"] for event in requests) == pytest.approx(0.3095055)
    assert sum(event["tokens_out"] for event in requests) == 23260
    assert sum(event["attributes"]["cache_reads"] for event in requests) == 3066304
    # Environment details: "PLAN MODE" in the first 4 requests, "ACT MODE" in the other 57. Cline
    # recorded no model in this file.
    assert [event["mode"] for event in requests] == ["plan"] * 4 + ["act"] * 57
    assert all("model" not in event["attributes"] for event in requests)
    # 28 `say: command`. Cline tells the model "Command executed." with no exit code (26 times) or
    # "Command is still running in the user's terminal." (2): no outcome we could vouch for.
    commands = of_kind(events, "command.exec")
    assert len(commands) == 28 and {event.get("outcome") for event in commands} == {None}
    assert Counter(event["attributes"]["status"] for event in commands) == {"finished": 26, "still running": 2}
    # 3 use_mcp_server, answered "Error:\nError: VSCode extension is not connected..." twice and
    # "Error:\nError: Command timeout: vscode-commands.changeTheme" once.
    tools = of_kind(events, "tool.result")
    mcp = [event for event in tools if "server" in event["attributes"]]
    assert [(event["resource"], event["outcome"]) for event in mcp] == [
        ("vscode-commands/open_explorer", "error"), ("vscode-commands/open_explorer", "error"),
        ("vscode-commands/change_theme", "timeout")]
    assert mcp[0]["attributes"]["error"].startswith("Error: VSCode extension is not connected")
    # 19 `ask: tool` and 5 `say: tool`: their results are 9 write_to_file, 8 replace_in_file,
    # 4 read_file and 3 list_files, all successful.
    assert len(tools) - len(mcp) == 24 and {event["outcome"] for event in tools if event not in mcp} == {"ok"}
    # 61 `say: checkpoint_created`, each with its lastCheckpointHash.
    checkpoints = of_kind(events, "checkpoint.saved")
    assert len(checkpoints) == 61 and checkpoints[0]["resource"] == "7fa4c5f0eb435c3f3672caab4d30cd2b469b2089"
    # 3 completion_result; after each the user wrote again (messages 154, 277, 368); the last
    # request was cancelled by the user, and the task waits on `ask: resume_task`.
    assert [event["time"] for event in of_kind(events, "task.completed")] == [1760534574748, 1760536367105,
                                                                            1760537177761]
    assert [event["time"] for event in of_kind(events, "task.resumed")] == [1760534636531, 1760536962693, 1760537913040]
    assert [event["time"] for event in of_kind(events, "task.abandoned")] == [1760537950411]
    assert outcome_of(events) == "abandoned"
    assert of_kind(events, "task.started")[0] | {"attributes": None} == {
        "kind": "task.started", "time": 1760534080239, "key": "cline:1760534080239:1760534080239:0:task.started",
        "client": "cline", "task_id": "1760534080239", "mode": "plan", "attributes": None}
    assert len(of_kind(events, "user.prompt")) == 4 and not of_kind(events, "agent.message")


@pytest.mark.parametrize(("folder", "mode", "requests", "tokens", "commands", "checkpoints", "span"), [
    # history_item.json: mode ask; ui: text, api_req_started (7983 in, 65 out), completion_result.
    ("ask-01a216c8-1f5d-7377-a60d-ccae99d0c677", "ask", 1, (7983, 65), 0, 0, (1795678543715, 1795678543795)),
    # mode code; 3 api_req_started (9864+10099+10365 in, 57+62+59 out), `ls`, hello.txt, completion.
    ("code-01a216c7-8068-739d-b45b-d7cea9790c72", "code", 3, (30328, 178), 1, 0, (1795678503023, 1795678505478)),
    # the same run with checkpoints on: 9865+10100+10366 in, and one checkpoint_saved.
    ("checkpoints-01a216c8-2ac6-743f-9c74-fce57917c78b", "code", 3, (30331, 178), 1, 1,
     (1795678546638, 1795678549011)),
])
def test_tasks_of_the_roo_code_cli(folder, mode, requests, tokens, commands, checkpoints, span):
    events, derivation = task_events(agent_fixture(f"roo-code-cli/tasks/{folder}"), "roo")
    assert_ingestible(events)
    assert derivation.task_id == folder.split("-", 1)[1]  # history_item.json's id, not the folder's name
    llm = of_kind(events, "llm.request")
    assert len(llm) == requests and {event["mode"] for event in events} == {mode}
    assert (sum(event["tokens_in"] for event in llm), sum(event["tokens_out"] for event in llm)) == tokens
    assert {event["resource"] for event in llm} == {"scripted-model"}  # <model> in environment_details
    assert sum(event["cost_usd"] for event in llm) == 0
    # Roo Code 3.52 keeps the request text out of ui_messages.json: `ls`'s "Exit code: 0" is in
    # api_conversation_history.json's tool_result.
    assert [(event["resource"], event["outcome"], event["attributes"]["exit_code"])
            for event in of_kind(events, "command.exec")] == [("ls", "ok", 0)] * commands
    assert [event["resource"] for event in of_kind(events, "tool.result")] == ["newFileCreated hello.txt"] * commands
    assert len(of_kind(events, "checkpoint.saved")) == checkpoints
    assert len(of_kind(events, "task.completed")) == 1 and outcome_of(events) == "completed"
    # Started at the first message's ts, completed at the completion_result's.
    assert (of_kind(events, "task.started")[0]["time"], of_kind(events, "task.completed")[0]["time"]) == span
    started = of_kind(events, "task.started")[0]
    assert started["attributes"]["profile"] == "default" and started["attributes"]["provider"] == "openai"


def test_events_carry_no_prompt_output_or_file_content():
    events, _ = task_events(agent_fixture(ROO_COMMANDS), "roo")
    stored = json.dumps(events, ensure_ascii=False)
    raw = json.loads(agent_fixture(ROO_COMMANDS + "/ui_messages.json").read_text())
    assert raw[0]["text"][:60] not in stored  # the task's prompt
    assert "Configuratio" not in stored  # the first command's output
    assert "Script pour lister" not in stored  # a written file's content
    assert "contextCondense" not in stored and "summary" not in stored


# ---- snapshots ----------------------------------------------------------------------------


def test_an_earlier_snapshot_gives_a_subset_of_the_later_ones_events():
    earlier, first = task_events(agent_fixture(CLINE_EARLIER), "cline")
    later, second = task_events(agent_fixture(CLINE), "cline")
    assert first.task_id == second.task_id == "1760534080239"
    keys_earlier, keys_later = {event["key"] for event in earlier}, {event["key"] for event in later}
    assert keys_earlier < keys_later and keys_earlier | keys_later == keys_later
    by_key = {event["key"]: event for event in later}
    assert all(by_key[event["key"]] == event for event in earlier)  # the same facts, not just the same keys
    # Messages 368-379 add: user_feedback (a prompt, and the task taken up again), 2 checkpoints,
    # 2 requests (the second cancelled: the task abandoned), 1 MCP call.
    assert Counter(by_key[key]["kind"] for key in keys_later - keys_earlier) == {
        "user.prompt": 1, "task.resumed": 1, "checkpoint.saved": 2, "llm.request": 2, "task.abandoned": 1,
        "tool.result": 1}


@pytest.mark.parametrize("fixture", [ROO_COMMANDS, ROO_ORCHESTRATOR, "cline"])
def test_every_snapshot_of_a_growing_task_gives_final_events_only(fixture):
    """Cut the task after every few messages, as a shipper polling it would see it: what each cut
    gives is exactly what the whole file gives for those keys (a stored key is never updated)."""
    folder = agent_fixture(fixture)
    raw = json.loads((folder / "ui_messages.json").read_text())
    history = folder / "api_conversation_history.json"
    info = TaskInfo("t", "cline" if fixture == "cline" else "roo", None,
                    json.loads(history.read_text()) if history.exists() else None)
    whole = {event["key"]: event for event in derive(read_messages(raw), info).events}
    for cut in [*range(1, len(raw), 5), *range(max(len(raw) - 12, 1), len(raw))]:
        for event in derive(read_messages(raw[:cut]), info).events:
            assert whole.get(event["key"]) == event, f"cut at {cut}: {event}"


# ---- what waits for later -----------------------------------------------------------------


def say(ts: int, name: str, text: str = "", **extra: Any) -> dict[str, Any]:
    return {"ts": ts, "type": "say", "say": name, "text": text, **extra}


def ask(ts: int, name: str, text: str = "", **extra: Any) -> dict[str, Any]:
    return {"ts": ts, "type": "ask", "ask": name, "text": text, **extra}


def request(ts: int, **facts: Any) -> dict[str, Any]:
    return say(ts, "api_req_started", json.dumps({"apiProtocol": "anthropic", **facts}))


ENVIRONMENT = "\n\n<environment_details>\n# Current Mode\n<slug>code</slug>\n<name>Code</name>\n<model>m1</model>\n" \
              "</environment_details>"
T = 1_790_000_000_000


def derived(messages: list[dict[str, Any]], client: str = "roo", **info: Any) -> Any:
    return derive(read_messages(messages), TaskInfo("t1", client, **info))


def test_a_request_still_streaming_waits_until_it_has_its_facts():
    streaming = [say(T, "text", "do it"), request(T + 1, request="<task>do it</task>" + ENVIRONMENT),
                 say(T + 2, "text", "thinking", partial=True)]
    first = derived(streaming)
    assert [event["kind"] for event in first.events] == ["user.prompt", "task.started"]
    assert first.waiting == {"a model request still streaming": 1}
    streaming[1] = request(T + 1, request="<task>do it</task>" + ENVIRONMENT, tokensIn=5, tokensOut=7, cost=0.25)
    done = derived(streaming)
    [llm] = [event for event in done.events if event["kind"] == "llm.request"]
    assert (llm["tokens_in"], llm["tokens_out"], llm["cost_usd"]) == (5, 7, 0.25)
    assert (llm["resource"], llm["mode"]) == ("m1", "code")


def test_a_command_waits_for_the_request_that_reports_its_exit_code():
    messages = [say(T, "text", "test"), request(T + 1, request="<task>test</task>" + ENVIRONMENT, cost=0.1),
                ask(T + 2, "command", "make test"), ask(T + 3, "command_output", ""), say(T + 3, "command_output", "ok")]
    assert derived(messages).waiting == {"a command still running": 1}
    messages.append(request(T + 4, request="[execute_command for 'make test'] Result:\n\nCommand executed in terminal "
                                           "within working directory '/w'. Exit code: 2\nOutput:\nFAILED" + ENVIRONMENT))
    waiting = derived(messages)  # the request reporting it is still streaming: the command waits too
    assert waiting.waiting["a command still running"] == 1
    messages[-1] = json.loads(json.dumps(messages[-1]))
    messages[-1]["text"] = json.dumps({**json.loads(messages[-1]["text"]), "cost": 0.2})
    [command] = [event for event in derived(messages).events if event["kind"] == "command.exec"]
    assert (command["resource"], command["outcome"], command["attributes"]["exit_code"]) == ("make test", "error", 2)
    # Both messages share ts T + 3 and still get a key each (the second has seq 1).
    assert read_messages(messages).messages[4].seq == 1


def test_a_roo_command_timeout_is_a_timeout():
    result = "[execute_command for 'npm start'] Result:\n\nThe command was terminated after exceeding a " \
             "user-configured 30s timeout."
    messages = [say(T, "text", "serve"), request(T + 1, request="<task>serve</task>" + ENVIRONMENT, cost=0.1),
                ask(T + 2, "command", "npm start"), say(T + 3, "error", "Command execution timed out after 30 seconds"),
                request(T + 4, cost=0.1, request=result + ENVIRONMENT)]
    [command] = [event for event in derived(messages).events if event["kind"] == "command.exec"]
    assert command["outcome"] == "timeout"
    # What the model was told is enough on its own (the UI's error may be missing).
    [command] = [event for event in derived(messages[:3] + messages[4:]).events if event["kind"] == "command.exec"]
    assert command["outcome"] == "timeout"


def test_restores_are_rollbacks_with_what_they_removed():
    removed = json.dumps({"tokensIn": 100, "tokensOut": 20, "cacheWrites": 0, "cacheReads": 0, "cost": 0.75})
    roo = [say(T, "text", "x"), request(T + 1, request="<task>x</task>" + ENVIRONMENT, cost=0.1),
           say(T + 2, "api_req_deleted", removed)]
    cline = [say(T, "text", "x"), request(T + 1, request="<task>x</task>", cost=0.1),
             say(T + 2, "deleted_api_reqs", removed), ask(T + 3, "resume_task")]
    for messages, client in ((roo, "roo"), (cline, "cline")):
        [rollback] = [event for event in derived(messages, client).events if event["kind"] == "task.rolled_back"]
        assert rollback["attributes"] == {"removed_cost_usd": 0.75, "removed_tokens_in": 100, "removed_tokens_out": 20}


def test_a_task_ending_on_a_failed_request_failed_until_it_is_retried():
    failing = [say(T, "text", "x"), request(T + 1, request="<task>x</task>" + ENVIRONMENT, cost=0.1),
               say(T + 2, "text", "on it"), request(T + 3, request="go on" + ENVIRONMENT),
               ask(T + 4, "api_req_failed", "529 Overloaded\nplease retry")]
    first = derived(failing)
    [failed] = [event for event in first.events if event["kind"] == "task.failed"]
    assert failed["attributes"] == {"reason": "api_req_failed", "error": "529 Overloaded"}
    assert outcome_of(first.events) == "failed"
    assert first.waiting == {"a model request still streaming": 1}  # it may be retried
    failing += [say(T + 5, "api_req_retried"), say(T + 6, "completion_result", "done")]
    failing[3] = request(T + 3, request="go on" + ENVIRONMENT, cost=0.2)
    later = derived(failing)
    kinds = [event["kind"] for event in later.events]
    assert kinds.count("llm.retried") == 1 and kinds.count("task.resumed") == 1 and "task.failed" not in kinds
    [retry] = [event for event in later.events if event["kind"] == "llm.retried"]
    assert retry["attributes"] == {"reason": "529 Overloaded"}
    # Sent as they came, the failure is followed by the resumption and the completion: completed.
    assert outcome_of([failed, *later.events]) == "completed"


def test_modes_follow_switches_and_subtasks_name_their_children():
    item = {"id": "t1", "mode": "architect", "childIds": ["child-1"], "parentTaskId": "parent-9"}
    messages = [say(T, "text", "plan"), request(T + 1, request="<task>plan</task>" + ENVIRONMENT.replace("code", "ask"),
                                                cost=0.1),
                ask(T + 2, "tool", json.dumps({"tool": "switchMode", "mode": "architect", "reason": "plan"})),
                request(T + 3, request="[switch_mode] Result: ok", cost=0.1),
                ask(T + 4, "tool", json.dumps({"tool": "newTask", "mode": "code", "content": "build it"})),
                say(T + 5, "subtask_result", "built")]
    events = derived(messages, history_item=item).events
    assert [event["mode"] for event in events if event["kind"] == "llm.request"] == ["ask", "architect"]
    [subtask] = [event for event in events if event["kind"] == "task.subtask"]
    assert subtask["attributes"] == {"child_task_id": "child-1", "child_mode": "code"}
    [started] = [event for event in events if event["kind"] == "task.started"]
    assert started["attributes"]["parent_task_id"] == "parent-9"


# ---- bad input ----------------------------------------------------------------------------


def problems_at(path: Path, client: str = "cline") -> list[str]:
    found = discover(path)
    reasons = [problem.reason for problem in found.problems]
    for files in found.tasks:
        reasons += [problem.reason for problem in read_task(files, client).problems]
    return reasons


def test_bad_files_are_reported_in_words(tmp_path):
    truncated = tmp_path / "truncated_ui_messages.json"
    truncated.write_text(json.dumps([say(T, "text", "x"), request(T + 1, cost=0.1)])[:-20])
    assert problems_at(truncated) == ["ends in the middle of its JSON: it is truncated, or still being written"]
    not_a_list = tmp_path / "object_ui_messages.json"
    not_a_list.write_text('{"messages": []}')
    assert problems_at(not_a_list) == ["holds an object, not a list of messages"]
    garbage = tmp_path / "garbage_ui_messages.json"
    garbage.write_text("[1, 2,, 3]")
    assert problems_at(garbage) == ["is not valid JSON: Expecting value at line 1, column 7"]
    empty = tmp_path / "empty_ui_messages.json"
    empty.write_text("")
    assert problems_at(empty) == ["is empty"]
    assert problems_at(tmp_path / "nowhere") == ["does not exist"]
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    assert problems_at(other) == ["is not a task's messages file (a name ending in ui_messages.json)"]
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    assert problems_at(lonely) == ["holds no task folders (no ui_messages.json in it or in its subfolders)"]


def test_one_bad_task_does_not_stop_the_others(tmp_path):
    tasks = tmp_path / "saoudrizwan.claude-dev" / "tasks"
    (tasks / "1760000000001").mkdir(parents=True)
    shutil.copyfile(agent_fixture(CLINE_EARLIER), tasks / "1760000000001" / "ui_messages.json")
    (tasks / "1760000000002").mkdir()
    (tasks / "1760000000002" / "ui_messages.json").write_text('[{"ts": 1760000000002, "type": "say"')
    (tasks / "1760000000003").mkdir()
    (tasks / "1760000000003" / "api_conversation_history.json").write_text("[]")
    found = discover(tmp_path / "saoudrizwan.claude-dev")
    assert [problem.reason for problem in found.problems] == [
        "is a task folder without ui_messages.json; nothing to read"]
    reads = [read_task(files, "cline") for files in found.tasks]
    assert [read.derivation.task_id if read.derivation else None for read in reads] == ["1760000000001", None]
    assert reads[1].problems[0].path.endswith("1760000000002/ui_messages.json")


def test_bad_entries_skip_themselves_only():
    messages = [say(T, "text", "x"), {"type": "say", "say": "text", "text": "no ts"}, "not an object",
                {"ts": "yesterday", "type": "say", "say": "text"}, {"ts": T + 1, "say": "text"},
                {"ts": T + 2, "type": "say"}, request(T + 3, request="<task>x</task>" + ENVIRONMENT, cost=0.1),
                say(T + 4, "brand_new_thing", "?"), ask(T + 5, "tool", "not json"), {"ts": T + 6, "type": "whisper"},
                say(T + 7, "completion_result", "done")]
    done = derived(messages)
    assert done.skipped == {"an entry has no ts": 1, "an entry is not a JSON object": 1,
                            "an entry's ts is not a positive number": 1, "an entry has no type": 1,
                            "a say entry has no say value": 1, "a tool message whose text is not JSON": 1}
    assert done.unknown == {"say:brand_new_thing": 1, "whisper:": 1}
    kept = [event for event in done.events if event["kind"] == "agent.message"]
    assert [event["attributes"] for event in kept] == [{"type": "say", "say": "brand_new_thing"},
                                                       {"type": "whisper", "name": ""}]
    assert {"llm.request", "task.completed"} <= {event["kind"] for event in done.events}


def test_timestamps_in_seconds_are_read_as_seconds_with_a_warning(tmp_path):
    folder = tmp_path / "1700000000"
    folder.mkdir()
    seconds = 1_760_000_000
    (folder / "ui_messages.json").write_text(json.dumps([
        say(seconds, "text", "x"), request(seconds + 1, request="<task>x</task>", cost=0.1),
        say(seconds + 2, "completion_result", "done")]))
    [files] = discover(folder).tasks
    read = read_task(files, "cline")
    assert [warning.reason for warning in read.warnings] == ["some ts values look like epoch seconds; read as seconds"]
    assert [event["time"] for event in read.derivation.events] == [1_760_000_000_000] * 2 + [1_760_000_001_000,
                                                                                          1_760_000_002_000]
    assert read.derivation.events[-1]["key"] == "cline:1700000000:1760000002:0:task.completed"


def test_where_a_task_id_comes_from(tmp_path):
    messages = json.dumps([say(T, "text", "x"), request(T + 1, request="<task>x</task>", cost=0.1)])
    for name in ("1795000000123", "0e9c2a51-4b6a-4c1e-9a51-2f0c1b7e6d44", "code-0e9c2a51-4b6a-4c1e-9a51-2f0c1b7e6d44",
                 "exports"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "ui_messages.json").write_text(messages)
    (tmp_path / "code-0e9c2a51-4b6a-4c1e-9a51-2f0c1b7e6d44" / "history_item.json").write_text('{"id": "from-history"}')
    ids = {files.ui.parent.name: read_task(files, "roo").derivation.task_id for files in discover(tmp_path).tasks}
    assert ids == {"1795000000123": "1795000000123",
                   "0e9c2a51-4b6a-4c1e-9a51-2f0c1b7e6d44": "0e9c2a51-4b6a-4c1e-9a51-2f0c1b7e6d44",
                   "code-0e9c2a51-4b6a-4c1e-9a51-2f0c1b7e6d44": "from-history",
                   "exports": str(T)}  # not a task folder's name: the first message's ts


def test_roo_codes_task_index_stands_in_for_a_missing_history_item(tmp_path):
    task_id = "0e9c2a51-4b6a-4c1e-9a51-2f0c1b7e6d44"
    (tmp_path / "tasks" / task_id).mkdir(parents=True)
    (tmp_path / "tasks" / task_id / "ui_messages.json").write_text(json.dumps(
        [say(T, "text", "x"), request(T + 1, request="<task>x</task>", cost=0.1)]))
    (tmp_path / "tasks" / "_index.json").write_text(json.dumps(
        {"version": 1, "entries": [{"id": task_id, "mode": "debug", "parentTaskId": "p-1", "apiConfigName": "work"}]}))
    [files] = discover(tmp_path).tasks
    events = read_task(files, "roo").derivation.events
    [started] = [event for event in events if event["kind"] == "task.started"]
    assert started["mode"] == "debug"  # no environment details in the request: the index's mode
    assert started["attributes"] | {"provider": None} == {"parent_task_id": "p-1", "profile": "work", "provider": None}
