"""The five metrics: their definitions on hand-counted volumes, how events fold into tasks
(outcomes, resumptions, abandonment, several sources of one task), the rollup on each database,
and the summary, series and Prometheus exposition through the running server."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from corral.events.model import Event
from corral.ingest.store import store_events
from corral.metrics.definitions import Volumes, metrics_of
from corral.metrics.fold import TaskState, fold_lifecycle, new_task
from corral.metrics.rollup import Rollup
from corral.metrics.summary import Scope, series, summarise, window_of
from corral.store.database import Database
from corral.store.migrate import upgrade
from tests.conftest import unique

NOW = datetime(2026, 11, 26, 12, 30, tzinfo=timezone.utc)


# ---- definitions -----------------------------------------------------------------------------


def test_the_issue_example_volumes_give_its_metrics():
    # The issue's example: 10 tasks (8 completed, 1 failed, 1 abandoned), 2 rollbacks, 200 tool
    # calls and 40 commands with 12 failures, $11.36 spent.
    volumes = Volumes(tasks=10, completed=8, failed=1, abandoned=1, rollbacks=2, tool_calls=200, commands=40,
                      call_errors=12, spend_usd=11.36)
    found = metrics_of(volumes, 912.0, 8)
    assert found["task_success_rate"] == {"value": 0.8, "samples": 10}
    assert found["rollback_frequency"] == {"value": 20.0, "samples": 10}
    assert found["tool_error_rate"] == {"value": 0.05, "samples": 240}
    assert found["median_cycle_time_s"] == {"value": 912.0, "samples": 8}
    assert found["cost_per_completed_task_usd"] == {"value": 1.42, "samples": 8}


def test_a_metric_without_samples_is_null_not_zero():
    found = metrics_of(Volumes(spend_usd=3.0), None, 0)
    assert all(metric["value"] is None for metric in found.values())
    assert [metric["samples"] for metric in found.values()] == [0, 0, 0, 0, 0]


# ---- folding a task's lifecycle --------------------------------------------------------------


def _event(kind: str, minute: int, **fields):
    return {"kind": kind, "time": NOW + timedelta(minutes=minute), "user_email": "a@example.com",
            "task_id": "t1", "source": "api", "attributes": {}, **fields}


def _folded(*events) -> TaskState:
    task = new_task(events[0])
    for event in events:
        fold_lifecycle(task, event)
    return task


def test_a_task_resumed_after_completing_is_open_until_it_completes_again():
    resumed = _folded(_event("task.started", 0), _event("task.completed", 10), _event("task.resumed", 20))
    assert resumed.outcome is None
    again = _folded(_event("task.started", 0), _event("task.completed", 10), _event("task.resumed", 20),
                    _event("task.completed", 30))
    assert again.outcome == "completed" and again.row()["cycle_s"] == 1800.0


def test_the_latest_completion_or_failure_decides_whatever_order_they_arrive_in():
    task = _folded(_event("task.started", 0), _event("task.failed", 40), _event("task.completed", 10))
    assert task.outcome == "failed" and task.outcome_at == NOW + timedelta(minutes=40)


def test_an_abandonment_does_not_override_a_completion_and_later_activity_reopens_it():
    completed = _folded(_event("task.started", 0), _event("task.completed", 10), _event("task.abandoned", 45))
    assert completed.outcome == "completed"
    reopened = _folded(_event("task.started", 0), _event("task.abandoned", 45), _event("llm.request", 50))
    assert reopened.outcome is None and reopened.last_at == NOW + timedelta(minutes=50)


def test_a_task_takes_its_starting_mode_and_its_first_model():
    task = _folded(_event("llm.request", 1, mode="code", attributes={"provider": "openai", "model": "gpt-5"}),
                   _event("task.started", 0, mode="architect", attributes={"parent_task_id": "p1"}),
                   _event("llm.request", 2, mode="code", attributes={"provider": "anthropic", "model": "claude"}))
    assert (task.mode, task.provider, task.model, task.parent_task_id) == ("architect", "openai", "gpt-5", "p1")
    assert task.started_at == NOW


# ---- the rollup on each database -------------------------------------------------------------


def _run(coroutine):
    return asyncio.run(coroutine)


async def _fold_and_summarise(url: str, batches: list[list[Event]], by: str | None = None) -> dict:
    upgrade(url)
    database = Database(url)
    try:
        rollup = Rollup(database)
        for batch in batches:
            async with database.transaction() as connection:
                await store_events(connection, batch)
            await rollup.catch_up()
        async with database.read() as connection:
            return await summarise(connection, window_of(NOW, timedelta(days=1), None, None), Scope(), by,
                                   NOW - timedelta(minutes=30))
    finally:
        await database.close()


def _task_events(task_id: str, source: str | None, start: datetime, cost: float, minutes: int = 20) -> list[Event]:
    who = {"user_email": "dev@example.com", "team": "platform", "client": "claude-code", "task_id": task_id,
           "source": source}
    return [Event(kind="task.started", time=start, mode="code", **who),
            Event(kind="llm.request", time=start + timedelta(minutes=1), cost_usd=cost, tokens_in=100, tokens_out=10,
                  outcome="ok", attributes={"provider": "anthropic", "model": "claude-sonnet-4-5"}, **who),
            Event(kind="command.exec", time=start + timedelta(minutes=2), resource="npm test", outcome="error",
                  attributes={"exit_code": 1}, **who),
            Event(kind="task.completed", time=start + timedelta(minutes=minutes), outcome="ok", **who)]


def test_the_rollup_counts_tasks_calls_and_spend(fresh_database):
    start = NOW - timedelta(hours=3)
    events = (_task_events("a", "api", start, 0.25, minutes=10) + _task_events("b", "api", start, 0.75, minutes=30)
              + [Event(kind="task.started", time=start, user_email="dev@example.com", team="platform", task_id="c",
                       source="api"),
                 Event(kind="task.rolled_back", time=start + timedelta(minutes=5), user_email="dev@example.com",
                       team="platform", task_id="c", source="api"),
                 Event(kind="tool.result", time=start + timedelta(minutes=6), user_email="dev@example.com",
                       team="platform", task_id="c", source="api", resource="read_file", outcome="ok",
                       attributes={"tool": "read_file"})])
    summary = _run(_fold_and_summarise(fresh_database, [events], by="tool"))
    # a and b completed (10 and 30 minutes); c has been idle for over 30 minutes: abandoned.
    volumes = summary["volumes"]
    assert (volumes["tasks"], volumes["completed"], volumes["abandoned"], volumes["rollbacks"]) == (3, 2, 1, 1)
    assert (volumes["requests"], volumes["commands"], volumes["tool_calls"], volumes["call_errors"]) == (2, 2, 1, 2)
    metrics = summary["metrics"]
    assert metrics["task_success_rate"] == {"value": round(2 / 3, 6), "samples": 3}
    assert metrics["rollback_frequency"] == {"value": round(100 / 3, 6), "samples": 3}
    assert metrics["tool_error_rate"] == {"value": round(2 / 3, 6), "samples": 3}
    assert metrics["median_cycle_time_s"] == {"value": 1200.0, "samples": 2}  # between 600 and 1800
    assert metrics["cost_per_completed_task_usd"] == {"value": 0.5, "samples": 2}
    tools = {group["key"]["tool"]: group["metrics"]["tool_error_rate"] for group in summary["groups"]}
    assert tools == {"command:npm": {"value": 1.0, "samples": 2}, "read_file": {"value": 0.0, "samples": 1}}


def test_a_series_puts_each_task_in_the_step_it_ended_in(fresh_database):
    start = NOW - timedelta(hours=3)  # 09:30; the tasks complete at 09:40 and 10:00
    events = _task_events("a", "api", start, 0.25, minutes=10) + _task_events("b", "api", start, 0.75, minutes=30)

    async def chart() -> list[dict]:
        upgrade(fresh_database)
        database = Database(fresh_database)
        try:
            async with database.transaction() as connection:
                await store_events(connection, events)
            await Rollup(database).catch_up()
            async with database.read() as connection:
                return await series(connection, window_of(NOW, timedelta(days=1), None, None), Scope(), "completed",
                                    timedelta(hours=6), NOW - timedelta(minutes=30))
        finally:
            await database.close()

    points = _run(chart())
    # The window is yesterday 13:00 to today 13:00 (NOW is 12:30): steps start at 13, 19, 01 and 07.
    assert [(point["start"][11:16], point["value"]) for point in points] == [
        ("13:00", 0), ("19:00", 0), ("01:00", 0), ("07:00", 2)]


@pytest.mark.parametrize("gateway_first", [True, False], ids=["gateway-first", "otlp-first"])
def test_a_task_seen_by_the_gateway_and_by_otlp_is_counted_once(fresh_database, gateway_first):
    start = NOW - timedelta(hours=2)
    gateway = _task_events("session-1", None, start, 0.40)
    otlp = _task_events("session-1", "otlp", start, 0.40)
    imported = _task_events("session-1", "claude-import", start, 0.40)
    batches = [gateway, otlp, imported] if gateway_first else [imported, otlp, gateway]
    summary = _run(_fold_and_summarise(fresh_database, batches))
    volumes = summary["volumes"]
    assert (volumes["tasks"], volumes["completed"], volumes["requests"], volumes["commands"]) == (1, 1, 1, 1)
    assert volumes["spend_usd"] == 0.4


def test_rebuilding_the_rollups_gives_the_same_summary(fresh_database):
    start = NOW - timedelta(hours=5)
    events = _task_events("x", "api", start, 1.0) + _task_events("y", "otlp", start, 2.0)
    before = _run(_fold_and_summarise(fresh_database, [events]))

    async def rebuilt() -> dict:
        database = Database(fresh_database)
        try:
            assert await Rollup(database).rebuild() == len(events)
            async with database.read() as connection:
                return await summarise(connection, window_of(NOW, timedelta(days=1), None, None), Scope(), None,
                                       NOW - timedelta(minutes=30))
        finally:
            await database.close()

    assert _run(rebuilt()) == before


def test_folding_waits_at_a_gap_in_ids_until_the_transactions_running_then_have_ended():
    rollup = Rollup(database=None)  # type: ignore[arg-type]
    rows = [{"id": 1}, {"id": 2}, {"id": 4}, {"id": 5}]
    # id 3 is missing while transactions 90..99 may still run (the next to begin is 100)
    assert [row["id"] for row in rollup._up_to_gap(rows, 0, oldest_running=90, next_transaction=100)] == [1, 2]
    assert [row["id"] for row in rollup._up_to_gap(rows, 0, oldest_running=99, next_transaction=120)] == [1, 2]
    # every transaction begun before the gap was seen has ended: id 3 was a rolled-back insert
    assert [row["id"] for row in rollup._up_to_gap(rows, 0, oldest_running=100, next_transaction=130)] == [1, 2, 4, 5]


# ---- through the server ----------------------------------------------------------------------


def _iso(time: datetime) -> str:
    return time.isoformat().replace("+00:00", "Z")


def _report(server, team: str, email: str) -> None:
    """Two completed tasks (12 and 20 minutes), one failed, one idle for hours (abandoned), one
    rollback; 4 requests costing $0.10 + $0.30 + $0.20 + $0.40; 5 commands (1 timeout) and
    3 tool results (1 error)."""
    start = datetime.now(timezone.utc) - timedelta(hours=3)

    def event(kind, task, minute, **fields):
        return {"kind": kind, "time": _iso(start + timedelta(minutes=minute)), "user": email, "client": "roo-code",
                "task_id": f"{team}-{task}", "mode": "code", "key": f"{team}-{task}-{kind}-{minute}", **fields}

    def request(task, minute, cost):
        return event("llm.request", task, minute, outcome="ok", cost_usd=cost, tokens_in=1000, tokens_out=100,
                     attributes={"provider": "openai", "model": "gpt-5"})

    events = [
        event("task.started", "one", 0), request("one", 1, 0.10), event("command.exec", "one", 2, resource="ls", outcome="ok"),
        event("command.exec", "one", 3, resource="npm test", outcome="timeout"), event("task.completed", "one", 12),
        event("task.started", "two", 0), request("two", 1, 0.30), event("task.rolled_back", "two", 5),
        event("tool.result", "two", 6, resource="write_to_file a.py", outcome="ok", attributes={"tool": "write_to_file"}),
        event("tool.result", "two", 7, resource="read_file b.py", outcome="error", attributes={"tool": "read_file"}),
        event("task.completed", "two", 20),
        event("task.started", "three", 30), request("three", 31, 0.20),
        event("command.exec", "three", 32, resource="make", outcome="error", attributes={"exit_code": 2}),
        event("task.failed", "three", 33, attributes={"reason": "mistake_limit_reached"}),
        event("task.started", "four", 40), request("four", 41, 0.40),
        event("command.exec", "four", 42, resource="git status", outcome="ok"),
        event("command.exec", "four", 43, resource="git diff", outcome="ok"),
        event("tool.result", "four", 44, resource="list_files .", outcome="ok", attributes={"tool": "list_files"}),
    ]
    with server.admin() as admin:
        response = admin.post("/api/v1/ingest/events", json={"source": "api", "events": events})
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": len(events), "duplicates": 0, "rejected": []}


@pytest.fixture
def reported_team(server, make_user):
    team = unique("metrics")
    with server.admin() as admin:
        assert admin.post("/api/v1/teams", json={"name": team}).status_code == 201
    email, key = make_user(teams=(team,))
    _report(server, team, email)
    return team, email, key


def test_the_summary_of_a_team_shows_the_five_metrics_with_their_samples(server, reported_team):
    team, _, _ = reported_team
    with server.admin() as admin:
        summary = admin.get("/api/v1/metrics/summary", params={"window": "24h", "team": team}).json()
    metrics, volumes = summary["metrics"], summary["volumes"]
    assert (volumes["tasks"], volumes["completed"], volumes["failed"], volumes["abandoned"]) == (4, 2, 1, 1)
    assert (volumes["requests"], volumes["commands"], volumes["tool_calls"], volumes["rollbacks"]) == (4, 5, 3, 1)
    assert volumes["spend_usd"] == pytest.approx(1.0)
    assert metrics["task_success_rate"] == {"value": 0.5, "samples": 4}
    assert metrics["rollback_frequency"] == {"value": 25.0, "samples": 4}
    assert metrics["tool_error_rate"] == {"value": 0.375, "samples": 8}  # timeout + exit 2 + read error, of 8
    assert metrics["median_cycle_time_s"] == {"value": 960.0, "samples": 2}  # 12 and 20 minutes
    assert metrics["cost_per_completed_task_usd"] == {"value": 0.5, "samples": 2}
    assert summary["previous"]["metrics"]["task_success_rate"] == {"value": None, "samples": 0}
    start, end = (datetime.fromisoformat(summary["window"][edge].replace("Z", "+00:00")) for edge in ("start", "end"))
    assert end - start == timedelta(hours=24) and end.minute == 0


def test_the_demo_comes_with_a_week_of_activity_to_read(server):
    with server.admin() as admin:
        summary = admin.get("/api/v1/metrics/summary", params={"window": "8d", "by": "team"}).json()
    teams = {group["key"]["team"] for group in summary["groups"]}
    assert {"platform", "payments", "contractors"} <= teams
    assert all(summary["metrics"][name]["samples"] > 0 for name in summary["metrics"])


def test_reporting_the_same_batch_again_changes_nothing(server, reported_team):
    team, email, _ = reported_team
    with server.admin() as admin:
        before = admin.get("/api/v1/metrics/summary", params={"window": "24h", "team": team}).json()
        _report_again = admin.post("/api/v1/ingest/events", json={"events": [
            {"kind": "task.completed", "time": _iso(datetime.now(timezone.utc) - timedelta(hours=2)), "user": email,
             "task_id": f"{team}-one", "key": f"{team}-one-task.completed-12"}]})
        assert _report_again.json()["duplicates"] == 1
        after = admin.get("/api/v1/metrics/summary", params={"window": "24h", "team": team}).json()
    assert after["metrics"] == before["metrics"] and after["volumes"] == before["volumes"]


def test_corral_metrics_by_team_prints_each_metric_with_its_samples(server, reported_team):
    team, _, _ = reported_team
    shown = server.cli("metrics", "--window", "24h", "--by", "team", check=True).stdout
    row = next(line for line in shown.splitlines() if line.strip().startswith(team))
    assert "50.0% (4)" in row and "25.0 (4)" in row and "37.5% (8)" in row and "16m00s (2)" in row
    assert "$0.50 (2)" in row and "$1.00" in row
    as_json = json.loads(server.cli("metrics", "--window", "24h", "--team", team, "--json", check=True).stdout)
    assert as_json["metrics"]["task_success_rate"] == {"value": 0.5, "samples": 4}


def test_rebuilding_through_the_cli_folds_every_event_again_and_keeps_the_numbers(server, reported_team, make_user):
    team, _, developer_key = reported_team
    with server.admin() as admin:
        before = admin.get("/api/v1/metrics/summary", params={"window": "24h", "team": team}).json()
    rebuilt = server.cli("metrics", "rebuild", check=True)
    assert "Rollups rebuilt" in rebuilt.stdout
    with server.admin() as admin:
        status = admin.get("/api/v1/metrics/status").json()
        after = admin.get("/api/v1/metrics/summary", params={"window": "24h", "team": team}).json()
    assert status["rebuilding"] is False and status["folded"] > 0
    assert after["metrics"] == before["metrics"] and after["volumes"] == before["volumes"]
    refused = server.cli("metrics", "rebuild", key=developer_key)
    assert refused.returncode == 1 and "admin" in refused.stderr


def test_the_series_puts_each_task_in_the_hour_it_ended(server, reported_team):
    team, _, _ = reported_team
    with server.admin() as admin:
        found = admin.get("/api/v1/metrics/series", params={"metric": "completed", "step": "1h", "window": "24h",
                                                            "team": team}).json()
    assert len(found["points"]) == 24
    assert sum(point["value"] for point in found["points"]) == 2


def test_people_read_their_own_metrics_and_their_teams_but_not_others(server, reported_team, make_user):
    team, email, key = reported_team
    _, stranger_key = make_user()
    with server.client(key) as member, server.client(stranger_key) as stranger:
        own = member.get("/api/v1/metrics/summary", params={"window": "24h"}).json()
        assert own["scope"] == {"team": None, "user": email} and own["volumes"]["tasks"] == 4
        assert member.get("/api/v1/metrics/summary", params={"window": "24h", "team": team}).status_code == 200
        by_person = member.get("/api/v1/metrics/summary", params={"team": team, "by": "user"})
        assert by_person.status_code == 403 and "auditors and admins" in by_person.json()["error"]["message"]
        for params in ({"team": team}, {"user": email}):
            refused = stranger.get("/api/v1/metrics/summary", params=params)
            assert refused.status_code == 403, params
        assert stranger.get("/api/v1/metrics/summary", params={"window": "24h"}).json()["volumes"]["tasks"] == 0
        assert stranger.get("/metrics").status_code == 403
    assert httpx.get(server.url + "/metrics").status_code == 401


@pytest.mark.parametrize("params, words", [
    ({"window": "7x"}, "is not a length"),
    ({"by": "colour"}, "by"),
    ({"since": "2026-11-20", "until": "2026-11-19"}, "since must be before until"),
    ({"since": "yesterday"}, "is not a date"),
    ({"window": "7d", "since": "2026-11-19"}, "either window or since"),
])
def test_wrong_summary_parameters_get_a_clear_error(server, params, words):
    with server.admin() as admin:
        response = admin.get("/api/v1/metrics/summary", params=params)
    assert response.status_code in (400, 422) and words in response.json()["error"]["message"], response.text


def test_windows_of_whole_days_and_odd_hours_count_the_same_requests(server, make_user):
    # Requests at 23:30 on the 1st, 00:30, 12:30 and 23:30 on the 2nd, 00:30 on the 3rd: a window
    # is read from day rows for its whole days and hour rows for the hours around them.
    email, _ = make_user(key=False)
    times = ["2026-03-01T23:30:00Z", "2026-03-02T00:30:00Z", "2026-03-02T12:30:00Z", "2026-03-02T23:30:00Z",
             "2026-03-03T00:30:00Z"]
    events = [{"kind": "llm.request", "time": time, "user": email, "task_id": "days", "outcome": "ok",
               "cost_usd": 1.0, "key": f"days-{index}"} for index, time in enumerate(times)]
    with server.admin() as admin:
        assert admin.post("/api/v1/ingest/events", json={"events": events}).json()["accepted"] == 5
        def requests(since: str, until: str) -> int:
            found = admin.get("/api/v1/metrics/summary", params={"user": email, "since": since, "until": until})
            assert found.status_code == 200, found.text
            return found.json()["volumes"]["requests"]
        assert requests("2026-03-02T00:00:00Z", "2026-03-03T00:00:00Z") == 3  # one whole day
        assert requests("2026-03-01T23:00:00Z", "2026-03-03T01:00:00Z") == 5  # a day and an hour each side
        assert requests("2026-03-02T01:00:00Z", "2026-03-03T01:00:00Z") == 3  # 12:30, 23:30, 00:30
        assert requests("2026-03-01T12:00:00Z", "2026-03-02T12:00:00Z") == 2  # no whole day: hours only
        series = admin.get("/api/v1/metrics/series", params={"user": email, "metric": "requests", "step": "24h",
                                                              "since": "2026-03-01T12:00:00Z",
                                                              "until": "2026-03-03T12:00:00Z"}).json()
        assert [point["value"] for point in series["points"]] == [2, 3]


def test_a_report_for_another_user_needs_the_admin_role(server, make_user):
    _, key = make_user()
    with server.client(key) as developer:
        response = developer.post("/api/v1/ingest/events", json={"events": [
            {"kind": "task.started", "time": "2026-11-26T10:00:00Z", "user": "someone-else@example.com"}]})
    assert response.status_code == 403 and "your own events" in response.json()["error"]["message"]


def test_one_users_keys_cannot_hide_another_users_events(server, make_user):
    # Import keys are derivable (client, task id, message time): a colleague who reports them first
    # must not make the victim's own import look like duplicates.
    attacker, attacker_key = make_user()
    victim, victim_key = make_user()
    task_id = unique("shared")
    batch = {"events": [{"kind": "task.completed", "time": "2026-11-26T10:00:00Z", "task_id": task_id,
                         "key": f"cline:{task_id}:1:0:task.completed"}]}
    with server.client(attacker_key) as client:
        assert client.post("/api/v1/ingest/events", json=batch).json()["accepted"] == 1
    with server.client(victim_key) as client:
        assert client.post("/api/v1/ingest/events", json=batch).json() == {"accepted": 1, "duplicates": 0,
                                                                           "rejected": []}
        assert client.post("/api/v1/ingest/events", json=batch).json()["duplicates"] == 1  # still once per user
    with server.admin() as admin:
        for user in (attacker, victim):
            stored = admin.get("/api/v1/events", params={"user": user}).json()["events"]
            assert [event["task_id"] for event in stored] == [task_id]


def test_bad_events_in_a_batch_are_refused_by_index_and_the_rest_stored(server, make_user):
    email, key = make_user()
    good = {"kind": "task.started", "time": "2026-11-26T10:00:00Z", "task_id": unique("t")}
    with server.client(key) as developer:
        response = developer.post("/api/v1/ingest/events", json={"events": [
            good, {"kind": "Not A Kind", "time": "2026-11-26T10:00:00Z"}, {"kind": "task.started", "time": "soon"},
            {"kind": "task.started", "time": "2026-11-26T10:00:00"}, {"kind": "llm.request", "time": 1795677093000,
                                                                        "cost_usd": -1}]})
    body = response.json()
    assert response.status_code == 200 and body["accepted"] == 1
    errors = {item["index"]: item["error"] for item in body["rejected"]}
    assert set(errors) == {1, 2, 3, 4}
    assert "kind" in errors[1] and "ISO 8601" in errors[2] and "offset" in errors[3] and "cost_usd" in errors[4]


def test_the_prometheus_exposition_passes_promtool(server, reported_team):
    with server.admin() as admin:
        admin.post("/v1/chat/completions", json={"model": "gpt-nonexistent", "messages": []})  # something counted
        response = admin.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    assert "# TYPE corral_task_success_ratio gauge" in text
    team, _, _ = reported_team
    assert f'corral_task_success_ratio{{team="{team}"}} 0.5' in text
    assert "user" not in {label.split("=")[0] for line in text.splitlines() if "{" in line
                          for label in line[line.index("{") + 1:line.index("}")].split(",")}
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing: .ci/run installs Debian's prometheus package")
        pytest.skip("promtool (Debian's prometheus package) is not installed")
    checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr
