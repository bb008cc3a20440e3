"""`corral import roo|cline` and `corral ship`, run as the real command against a real Corral:
real task folders are imported once (a second import stores nothing), a later snapshot adds only
its new events, only admins import for someone else, and the shipper sends only what is new,
outlives its own restarts and waits out a Corral that is not there yet, delivering each event
once. Task folders are copied under fresh task ids, so each test's events are its own."""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from corral.cli.imports import ShipState
from tests.conftest import CORRAL, Server, free_port
from tests.test_taskfolders import CLINE, CLINE_EARLIER, ROO_COMMANDS, ROO_ORCHESTRATOR, agent_fixture

ROO_CLI_CODE = "roo-code-cli/tasks/code-01a216c7-8068-739d-b45b-d7cea9790c72"
# Storing each keyed event once is the database's work: those tests run on every backend. What the
# command line decides alone (paths, refusals it relays, the shipper's state and retries) runs on one.
ONE_BACKEND = pytest.mark.parametrize("server", ["sqlite"], indirect=True)


def roo_copy(fixture: str, tasks: Path) -> str:
    """A Roo task folder copied under a new task id (history_item.json's id follows)."""
    task_id = str(uuid.uuid4())
    source, target = agent_fixture(fixture), tasks / task_id
    target.mkdir(parents=True)
    for file in source.glob("*.json"):  # copyfile: the copies are writable, unlike the fixtures
        shutil.copyfile(file, target / file.name)
    item = target / "history_item.json"
    if item.exists():
        item.write_text(json.dumps({**json.loads(item.read_text()), "id": task_id}))
    return task_id


def cline_copy(fixture: str, tasks: Path, task_id: str | None = None) -> str:
    """A Cline messages file as the ui_messages.json of a task folder named like Cline's (ms)."""
    task_id = task_id or str(random.randrange(1_700_000_000_000, 1_800_000_000_000))
    (tasks / task_id).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(agent_fixture(fixture), tasks / task_id / "ui_messages.json")
    return task_id


def summary(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def stored(server: Server, user: str) -> list[dict[str, Any]]:
    """Every event of a user, read back through the API."""
    found: list[dict[str, Any]] = []
    cursor = None
    with server.admin() as admin:
        while True:
            page = admin.get("/api/v1/events", params={"user": user, "limit": 1000,
                                                       **({"before": cursor} if cursor else {})}).json()
            found += page["events"]
            cursor = page["next"]
            if not cursor:
                return found


def test_importing_twice_stores_each_event_once(server, make_user, tmp_path):
    owner, _ = make_user(key=False)
    tasks = tmp_path / "rooveterinaryinc.roo-cline" / "tasks"
    # Two copies of each big task: about 100 kB of events, more than the test server takes in one
    # request (64 kB), so the import also has to split its batches.
    fixtures = (ROO_COMMANDS, ROO_ORCHESTRATOR, ROO_CLI_CODE, ROO_COMMANDS, ROO_ORCHESTRATOR)
    ids = [roo_copy(fixture, tasks) for fixture in fixtures]
    first = summary(server.cli("import", "roo", str(tasks.parent), "--user", owner, "--json"))
    assert first["tasks"] == 5 and first["problems"] == [] and first["entries"]["read"] == 2 * (363 + 146) + 9
    parsed = first["events"]["parsed"]
    # e73ea764 ends while a command still runs: one event waits in each copy.
    assert first["events"] == {"parsed": parsed, "accepted": parsed, "duplicates": 0, "rejected": 0, "waiting": 2}
    again = summary(server.cli("import", "roo", str(tasks), "--user", owner, "--json"))
    assert again["events"] == {"parsed": parsed, "accepted": 0, "duplicates": parsed, "rejected": 0, "waiting": 2}
    events = stored(server, owner)
    assert len(events) == parsed and len({event["event_key"] for event in events}) == parsed
    assert {(event["source"], event["client"]) for event in events} == {("roo-code-import", "roo-code")}
    assert {event["task_id"] for event in events} == set(ids)
    kinds = Counter(event["kind"] for event in events)
    # Counted in the files, per copy: 24 + 30 + 3 api_req_started and 2 condense_context; 10 final
    # commands in e73ea764 and `ls` in the CLI task; 6 newTask; 1 + 1 completion_result.
    assert kinds["llm.request"] == 2 * (24 + 2 + 30) + 3 and kinds["command.exec"] == 2 * 10 + 1
    assert (kinds["task.subtask"], kinds["task.completed"], kinds["task.started"]) == (2 * 6, 2 * 1 + 1, 5)


def test_a_later_snapshot_adds_only_its_new_events(server, make_user, tmp_path):
    owner, _ = make_user(key=False)
    task_id = cline_copy(CLINE_EARLIER, tmp_path / "tasks")
    earlier = summary(server.cli("import", "cline", str(tmp_path / "tasks"), "--user", owner, "--json"))
    # The first 368 messages: 59 requests, 59 checkpoints, 28 commands, 2 MCP calls, 24 other
    # tools, 3 completions, 2 resumptions, 3 prompts and the start.
    assert earlier["events"]["parsed"] == earlier["events"]["accepted"] == 59 + 59 + 28 + 2 + 24 + 3 + 2 + 3 + 1
    cline_copy(CLINE, tmp_path / "tasks", task_id)  # the same task, 12 messages on
    later = summary(server.cli("import", "cline", str(tmp_path / "tasks" / task_id), "--user", owner, "--json"))
    # Messages 368-379: a prompt (and the task taken up again), 2 checkpoints, 2 requests (the
    # second cancelled: abandoned), 1 MCP call.
    assert (later["events"]["accepted"], later["events"]["duplicates"]) == (8, 181)
    assert len(stored(server, owner)) == 189


@ONE_BACKEND
def test_only_admins_import_for_someone_else(server, make_user, tmp_path):
    developer, key = make_user()
    other, _ = make_user(key=False)
    cline_copy(CLINE_EARLIER, tmp_path / "tasks")
    refused = server.cli("import", "cline", str(tmp_path / "tasks"), "--user", other, key=key)
    assert refused.returncode == 1
    assert "reporting for another user needs the admin role (HTTP 403)" in refused.stderr
    own = summary(server.cli("import", "cline", str(tmp_path / "tasks"), "--json", key=key))
    assert own["events"]["accepted"] == 181
    assert {event["user_email"] for event in stored(server, developer)} == {developer}
    assert stored(server, other) == []


@ONE_BACKEND
def test_bad_paths_and_files_are_said_in_words(server, make_user, tmp_path):
    owner, _ = make_user(key=False)
    missing = server.cli("import", "roo", str(tmp_path / "nowhere"))
    assert missing.returncode == 1
    assert f"corral: nothing could be imported ({tmp_path / 'nowhere'}: does not exist)" in missing.stderr
    tasks = tmp_path / "tasks"
    cline_copy(CLINE_EARLIER, tasks)
    (tasks / "1760000000002").mkdir()
    (tasks / "1760000000002" / "ui_messages.json").write_text('[{"ts": 1760000000002, "type": "say", "say": "te')
    partly = server.cli("import", "cline", str(tasks), "--user", owner)
    assert partly.returncode == 0, partly.stderr
    assert "events: 181 parsed, 181 accepted, 0 duplicates" in partly.stdout
    assert (f"{tasks / '1760000000002' / 'ui_messages.json'}: ends in the middle of its JSON: it is truncated, "
            "or still being written") in partly.stdout


def ship(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return server.cli("ship", "--client", "cline", "--once", *args)


@ONE_BACKEND
def test_ship_sends_only_what_is_new(server, make_user, tmp_path):
    owner, _ = make_user(key=False)
    task_id = cline_copy(CLINE_EARLIER, tmp_path / "tasks")
    state = tmp_path / "state.jsonl"
    arguments = ("--watch", str(tmp_path), "--state", str(state), "--user", owner)
    first = ship(server, *arguments)
    assert first.returncode == 0, first.stderr
    assert "shipped 181 new events from 1 task (0 already in Corral" in first.stdout
    cline_copy(CLINE, tmp_path / "tasks", task_id)  # Cline wrote 12 more messages
    second = ship(server, *arguments)  # a new process: what was sent is in the state file
    assert "shipped 8 new events from 1 task (0 already in Corral, 0 rejected" in second.stdout
    assert ship(server, *arguments).stdout == ""  # nothing changed, nothing read, nothing sent
    acknowledged: set[str] = set()
    for line in state.read_text().splitlines():  # the state is a journal of JSON lines
        acknowledged.update(json.loads(line).get("keys", []))
    assert len(acknowledged) == 189 and all(key.startswith(f"cline:{task_id}:") for key in acknowledged)
    assert len(stored(server, owner)) == 189


def test_the_ship_state_survives_a_crash_in_the_middle_of_a_write(tmp_path):
    path = tmp_path / "state.jsonl"
    state = ShipState.load(path)
    state.acknowledge([{"client": "cline", "task_id": "1", "key": "cline:1:5:0:llm.request"}])
    state.read_in_full({"/tasks/1/ui_messages.json": [[7, 8]]})
    state.acknowledge([{"client": "cline", "task_id": "1", "key": "cline:1:6:0:task.completed"}])
    with open(path, "a") as file:
        file.write('{"task": "cline:1", "keys": ["cline:1:7:0:llm.req')  # the power went out here
    again = ShipState.load(path)
    assert again.acknowledged == {"cline:1": {"cline:1:5:0:llm.request", "cline:1:6:0:task.completed"}}
    assert again.files == {"/tasks/1/ui_messages.json": [[7, 8]]}
    assert len(path.read_text().splitlines()) == 3  # compacted: version, files, one line per task


@contextmanager
def forwarding(port: int, target: str) -> Iterator[None]:
    """A TCP proxy from 127.0.0.1:port to the target URL's server, while the block runs."""
    upstream = urlsplit(target)
    listener = socket.create_server(("127.0.0.1", port))
    listener.settimeout(0.1)
    stop = threading.Event()

    def pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def accept() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except socket.timeout:
                continue
            server = socket.create_connection((upstream.hostname, upstream.port), timeout=10)
            for ends in ((client, server), (server, client)):
                threading.Thread(target=pipe, args=ends, daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


@ONE_BACKEND
def test_ship_waits_for_corral_and_delivers_everything_once(server, make_user, tmp_path):
    owner, _ = make_user(key=False)
    cline_copy(CLINE, tmp_path / "tasks")
    port = free_port()  # nothing listens there yet
    log = tmp_path / "ship.log"
    with open(log, "w") as stderr:
        shipper = subprocess.Popen(
            [CORRAL, "ship", "--watch", str(tmp_path / "tasks"), "--client", "cline", "--once", "--user", owner,
             "--url", f"http://127.0.0.1:{port}", "--state", str(tmp_path / "state.jsonl")],
            env={**os.environ, "CORRAL_KEY": server.admin_key}, stdout=subprocess.PIPE, stderr=stderr, text=True)
        try:
            deadline = time.monotonic() + 30
            while "retrying in 1s" not in log.read_text():  # it failed twice and backs off
                assert shipper.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
            with forwarding(port, server.url):  # Corral appears
                output, _ = shipper.communicate(timeout=30)
        finally:
            if shipper.poll() is None:
                shipper.kill()
                shipper.wait()
    assert shipper.returncode == 0, log.read_text()
    assert "cannot reach Corral at" in log.read_text()
    assert "shipped 189 new events from 1 task (0 already in Corral, 0 rejected" in output
    events = stored(server, owner)
    assert len(events) == len({event["event_key"] for event in events}) == 189
    assert Counter(event["kind"] for event in events)["llm.request"] == 61  # api_req_started, counted


def test_imported_agent_tasks_give_the_five_metrics(server, make_user):
    """The real task folders, imported as they are, read back as the five metrics. Every expected
    number is counted in the fixture files (see test_taskfolders.py for each count's jq)."""
    owner, _ = make_user(key=False)
    for client, path in (("roo", agent_fixture("roo-code")), ("roo", agent_fixture("roo-code-cli/tasks")),
                         ("cline", agent_fixture(CLINE))):
        imported = summary(server.cli("import", client, str(path), "--user", owner, "--json"))
        assert imported["problems"] == [] and imported["events"]["rejected"] == 0
    with server.admin() as admin:
        def read(since: str, until: str) -> dict[str, Any]:
            response = admin.get("/api/v1/metrics/summary", params={"user": owner, "since": since, "until": until})
            assert response.status_code == 200, response.text
            return response.json()

        # September-October 2025: e73ea764 (ends while a command runs), bc93a6f7 (completed, then
        # taken up again and left) and the Cline task (its last request cancelled by the user).
        # None completed: all three idle for over 30 minutes, so abandoned; no restore anywhere.
        autumn = read("2025-09-01T00:00:00Z", "2025-11-01T00:00:00Z")
        volumes, metrics = autumn["volumes"], autumn["metrics"]
        assert (volumes["tasks"], volumes["completed"], volumes["failed"], volumes["abandoned"]) == (3, 0, 0, 3)
        # 24 + 2 condenses, 30, 61 requests; the cancelled one is not an error.
        assert (volumes["requests"], volumes["request_errors"], volumes["rollbacks"]) == (117, 0, 0)
        # Commands with a known exit: e73ea764's 10 (exit 1 twice); Cline's 28 have none, so they
        # are not calls. Tools: 13 in e73ea764, 19 in bc93a6f7 (newTask is a subtask, not a call),
        # 27 in the Cline task, of which 2 MCP errors and 1 MCP timeout.
        assert (volumes["commands"], volumes["command_errors"], volumes["tool_calls"]) == (10, 2, 59)
        assert (volumes["call_errors"], volumes["call_timeouts"]) == (5, 1)
        assert volumes["spend_usd"] == pytest.approx(3.42745704 + 0.1218748125 + 0.143115 + 2.90000775 + 0.3095055)
        assert metrics == {"task_success_rate": {"value": 0.0, "samples": 3},
                           "rollback_frequency": {"value": 0.0, "samples": 3},
                           "tool_error_rate": {"value": round(5 / 69, 6), "samples": 69},
                           "median_cycle_time_s": {"value": None, "samples": 0},
                           "cost_per_completed_task_usd": {"value": None, "samples": 0}}

        # The Roo Code CLI's three tasks (November 2026), each completed, on a local model at no cost:
        # 1 + 3 + 3 requests, `ls` (exit 0) and hello.txt written in two of them.
        week = read("2026-11-20T00:00:00Z", "2026-11-27T00:00:00Z")
        volumes, metrics = week["volumes"], week["metrics"]
        assert (volumes["tasks"], volumes["completed"], volumes["requests"]) == (3, 3, 7)
        assert (volumes["tokens_in"], volumes["tokens_out"]) == (7983 + 30328 + 30331, 65 + 178 + 178)
        assert (volumes["commands"], volumes["tool_calls"], volumes["call_errors"]) == (2, 2, 0)
        # Completion - first message: 0.080 s, 2.455 s and 2.373 s.
        assert metrics["median_cycle_time_s"] == {"value": 2.373, "samples": 3}
        assert metrics["task_success_rate"] == {"value": 1.0, "samples": 3}
        assert metrics["cost_per_completed_task_usd"] == {"value": 0.0, "samples": 3}
        assert metrics["tool_error_rate"] == {"value": 0.0, "samples": 4}
