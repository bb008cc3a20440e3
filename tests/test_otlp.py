"""The OTLP/HTTP receiver: what Claude Code and Cline export, sent by the real OpenTelemetry SDK's
OTLP exporters (protobuf, gzip or not) and by replaying a real Claude Code JSON export, becomes
Corral events, each record once, attributed by key; bad input gets OTLP's own error answers."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.rpc.status_pb2 import Status
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest, ExportLogsServiceResponse
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExportResult
from opentelemetry.sdk.metrics import Counter as CounterInstrument
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from corral.ingest import otlp, otlp_wire

ROOT = Path(__file__).resolve().parent.parent
# A real Claude Code 2.1.197 export (OTEL_EXPORTER_OTLP_PROTOCOL=http/json): one /v1/logs body,
# one /v1/metrics body, as they arrived.
CLAUDE_EXPORT = ROOT / "tests/fixtures/agents/claude-code-cli/otlp.jsonl"
# Counted by hand in that file (jq '.body.resourceLogs[].scopeLogs[].logRecords[].body.stringValue'):
# user_prompt, tool_decision (Bash), api_request, tool_result (Bash `ls`), api_request,
# tool_decision (Write), tool_result (Write), api_request, assistant_response: 9 records.
CLAUDE_LOG_KINDS = {"user.prompt": 1, "tool.decision": 2, "llm.request": 3, "command.exec": 1, "tool.result": 1,
                    "agent.message": 1}
# Its 10 data points: session.count, lines_of_code.count x2 (added, removed), cost.usage,
# token.usage x4 (input, output, cacheRead, cacheCreation), code_edit_tool.decision, active_time.total.
CLAUDE_METRIC_POINTS = 10
# The three api_request records: 19547 + 19628 + 19753 input tokens, 33 + 48 + 17 output tokens,
# 0.09856 + 0.09934 + 0.09919 USD; the same totals as its token.usage and cost.usage points.
CLAUDE_TOKENS_IN, CLAUDE_TOKENS_OUT, CLAUDE_COST = 58928, 98, 0.29709
CLAUDE_PROMPT = "List the files in this repo, then create hello.txt, then finish."


# ---- helpers ------------------------------------------------------------------------------


def claude_export() -> tuple[dict[str, Any], dict[str, Any]]:
    """The recorded (logs body, metrics body)."""
    bodies = {entry["path"]: entry["body"] for entry in map(json.loads, CLAUDE_EXPORT.read_text().splitlines())}
    return bodies["/v1/logs"], bodies["/v1/metrics"]


def plain(value: dict[str, Any]) -> Any:
    """An OTLP/JSON AnyValue as the Python value an SDK takes."""
    ((kind, item),) = value.items()
    return {"stringValue": str, "intValue": int, "doubleValue": float, "boolValue": bool}[kind](item)


def claude_records() -> tuple[dict[str, Any], list[tuple[str, int, dict[str, Any]]]]:
    """The recorded logs as (resource attributes, [(body, time in ns, attributes)])."""
    logs, _ = claude_export()
    resource_logs = logs["resourceLogs"][0]
    resource = {pair["key"]: plain(pair["value"]) for pair in resource_logs["resource"]["attributes"]}
    records = [(record["body"]["stringValue"], int(record["timeUnixNano"]),
                {pair["key"]: plain(pair["value"]) for pair in record["attributes"]})
               for record in resource_logs["scopeLogs"][0]["logRecords"]]
    return resource, records


class RecordingLogExporter(OTLPLogExporter):
    """The SDK's OTLP/HTTP log exporter, remembering what each export returned."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.results: list[LogRecordExportResult] = []

    def export(self, batch):  # type: ignore[no-untyped-def]
        result = super().export(batch)
        self.results.append(result)
        return result


def sdk_logs(url: str, key: str | None, resource: dict[str, Any], scope: str,
             records: list[tuple[str, int, dict[str, Any]]], compression: Compression = Compression.NoCompression,
             exporter: RecordingLogExporter | None = None) -> list[LogRecordExportResult]:
    """Emit the records through the real SDK (LoggerProvider, batch processor, OTLP/HTTP protobuf)."""
    exporter = exporter or RecordingLogExporter(endpoint=f"{url}/v1/logs", timeout=30, compression=compression,
                                                headers={"Authorization": f"Bearer {key}"} if key else {})
    provider = LoggerProvider(resource=Resource.create(resource), shutdown_on_exit=False)
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    logger = provider.get_logger(scope, "2.1.197")
    for body, time_ns, attributes in records:
        logger.emit(timestamp=time_ns, observed_timestamp=time_ns, body=body, attributes=attributes)
    provider.force_flush()
    provider.shutdown()
    return exporter.results


def events_of(server, email: str, kind: str | None = None) -> list[dict[str, Any]]:
    params: dict[str, Any] = {"user": email, "limit": 1000, **({"kind": kind} if kind else {})}
    with server.admin() as admin:
        response = admin.get("/api/v1/events", params=params)
    assert response.status_code == 200, response.text
    return response.json()["events"]


def kinds(events: list[dict[str, Any]]) -> dict[str, int]:
    return dict(Counter(event["kind"] for event in events))


def post(server, path: str, key: str | None, content: bytes, content_type: str = "application/json",
         **headers: str) -> httpx.Response:
    all_headers = {"content-type": content_type, **headers, **({"Authorization": f"Bearer {key}"} if key else {})}
    with httpx.Client(base_url=server.url, timeout=30) as client:
        return client.post(path, content=content, headers=all_headers)


def log_body(records: list[dict[str, Any]], resource: dict[str, str] | None = None) -> bytes:
    """An OTLP/JSON logs body; each record is {"body": name, "attributes": {key: AnyValue}}."""
    return json.dumps({"resourceLogs": [{
        "resource": {"attributes": [{"key": name, "value": {"stringValue": value}}
                                    for name, value in (resource or {"service.name": "claude-code"}).items()]},
        "scopeLogs": [{"scope": {"name": "com.anthropic.claude_code.events"}, "logRecords": [
            {"timeUnixNano": str(record.get("time", 1795677093470000000 + index)),
             "body": {"stringValue": record["body"]},
             "attributes": [{"key": name, "value": value} for name, value in record["attributes"].items()]}
            for index, record in enumerate(records)]}]}]}).encode()


def text(value: str) -> dict[str, str]:
    return {"stringValue": value}


def rpc_status(response: httpx.Response) -> Status:
    """The google.rpc.Status an OTLP failure carries, in the encoding it says it has."""
    if response.headers["content-type"].startswith("application/x-protobuf"):
        return Status.FromString(response.content)
    body = response.json()
    return Status(code=body.get("code", 0), message=body["message"])


# ---- Claude Code, through the real SDK and replayed -----------------------------------------


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip], ids=["plain", "gzip"])
def test_claude_code_events_exported_by_the_sdk_become_corral_events(server, make_user, compression):
    email, key = make_user()
    resource, records = claude_records()
    assert sdk_logs(server.url, key, resource, "com.anthropic.claude_code.events", records,
                    compression) == [LogRecordExportResult.SUCCESS]

    events = events_of(server, email)
    assert kinds(events) == CLAUDE_LOG_KINDS
    assert {event["source"] for event in events} == {"otlp"}
    assert {event["client"] for event in events} == {"claude-code"}
    assert {event["task_id"] for event in events} == {"196c0a18-af04-4008-8bc0-44327cd85540"}
    requests = [event for event in events if event["kind"] == "llm.request"]
    assert sum(event["tokens_in"] for event in requests) == CLAUDE_TOKENS_IN
    assert sum(event["tokens_out"] for event in requests) == CLAUDE_TOKENS_OUT
    assert sum(event["cost_usd"] for event in requests) == pytest.approx(CLAUDE_COST)
    assert {(event["resource"], event["outcome"], event["attributes"]["provider"]) for event in requests} == {
        ("claude-opus-4-8", "ok", "anthropic")}
    (command,) = [event for event in events if event["kind"] == "command.exec"]
    assert (command["resource"], command["outcome"], command["duration_ms"]) == ("ls", "ok", 237)  # "237": text
    (write,) = [event for event in events if event["kind"] == "tool.result"]
    assert (write["resource"], write["outcome"], write["attributes"]["path"]) == (
        "Write", "ok", "/home/dev/agent-cli/work-claude/otel/repo/hello.txt")
    (prompt,) = [event for event in events if event["kind"] == "user.prompt"]
    assert prompt["attributes"]["prompt_length"] == 64
    assert CLAUDE_PROMPT not in json.dumps(events)  # exported with OTEL_LOG_USER_PROMPTS, never stored
    assert "Done: listed files" not in json.dumps(events)  # nor the assistant's response


def test_the_recorded_claude_code_export_replays_once(server, make_user):
    email, key = make_user()
    logs, metrics = claude_export()
    for _ in range(2):  # an exporter's retry: the same bodies again store nothing new
        for path, body in (("/v1/logs", logs), ("/v1/metrics", metrics)):
            with httpx.Client(base_url=server.url, timeout=30) as client:  # chunked, as Claude Code sends it
                response = client.post(path, content=iter([json.dumps(body).encode()]), headers={
                    "content-type": "application/json", "Authorization": f"Bearer {key}"})
            assert response.status_code == 200, response.text
            assert response.headers["content-type"] == "application/json"
            assert response.json() == {}
        assert kinds(events_of(server, email)) == {**CLAUDE_LOG_KINDS, "otel.metric": CLAUDE_METRIC_POINTS}

    points = {(event["attributes"]["name"], event["attributes"].get("type")): event["attributes"]
              for event in events_of(server, email, "otel.metric")}
    assert points[("claude_code.cost.usage", None)]["value"] == pytest.approx(CLAUDE_COST)
    assert points[("claude_code.cost.usage", None)]["unit"] == "USD"
    assert points[("claude_code.token.usage", "input")]["value"] == CLAUDE_TOKENS_IN
    assert points[("claude_code.token.usage", "output")]["temporality"] == "delta"


def test_the_same_records_sent_as_json_and_as_protobuf_are_stored_once(server, make_user):
    email, key = make_user()
    logs, _ = claude_export()
    assert post(server, "/v1/logs", key, json.dumps(logs).encode()).status_code == 200
    resource, records = claude_records()
    request = otlp_wire.decode("logs", json.dumps(logs).encode(), "json")
    response = post(server, "/v1/logs", key, request.SerializeToString(), "application/x-protobuf")
    assert response.status_code == 200 and response.headers["content-type"] == "application/x-protobuf"
    assert ExportLogsServiceResponse.FromString(response.content) == ExportLogsServiceResponse()
    assert len(events_of(server, email)) == len(records)


# ---- metrics through the real SDK -----------------------------------------------------------


def test_metrics_exported_by_the_sdk_are_kept_as_otel_metric_events(server, make_user):
    email, key = make_user()
    exporter = OTLPMetricExporter(endpoint=f"{server.url}/v1/metrics", headers={"Authorization": f"Bearer {key}"},
                                  timeout=30, preferred_temporality={CounterInstrument: AggregationTemporality.DELTA,
                                                                     Histogram: AggregationTemporality.DELTA})
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False,
                             resource=Resource.create({"service.name": "claude-code", "service.version": "2.1.197"}))
    meter = provider.get_meter("com.anthropic.claude_code", "2.1.197")
    session = {"session.id": "5e551011-0000-4000-8000-000000000001", "terminal.type": "dumb"}
    meter.create_counter("claude_code.cost.usage", unit="USD").add(0.25, {**session, "model": "claude-opus-4-8"})
    meter.create_counter("claude_code.token.usage", unit="tokens").add(1200, {**session, "type": "input",
                                                                                "api_key": "sk-ant-0123456789abcdefghij"})
    meter.create_counter("claude_code.session.count").add(1, session)
    meter.create_histogram("claude_code.tool.duration", unit="ms").record(40, session)
    assert provider.force_flush()
    provider.shutdown()

    points = {event["attributes"]["name"]: event for event in events_of(server, email, "otel.metric")}
    assert set(points) == {"claude_code.cost.usage", "claude_code.token.usage", "claude_code.session.count",
                           "claude_code.tool.duration"}
    cost = points["claude_code.cost.usage"]
    assert (cost["attributes"]["value"], cost["attributes"]["unit"], cost["attributes"]["temporality"]) == (
        0.25, "USD", "delta")
    assert (cost["client"], cost["source"], cost["attributes"]["model"]) == ("claude-code", "otlp", "claude-opus-4-8")
    assert cost["cost_usd"] is None  # kept for reference: spend comes from the log events
    tokens = points["claude_code.token.usage"]["attributes"]
    assert tokens["value"] == 1200 and tokens["type"] == "input" and "api_key" not in tokens
    assert "sk-ant-" not in json.dumps(list(points.values()))
    histogram = points["claude_code.tool.duration"]["attributes"]
    assert (histogram["count"], histogram["value"], histogram["unit"]) == (1, 40, "ms")


# ---- Cline ----------------------------------------------------------------------------------


def test_cline_events_exported_by_the_sdk_become_corral_events(server, make_user):
    email, key = make_user()
    ulid = "01JCLINE0TASK0000000000001"
    start = 1795677000000000000
    # What Cline's TelemetryService sends (cline/cline src/services/telemetry): flattened
    # properties, its metadata, numbers and booleans as they are; lists as JSON text.
    meta = {"ulid": ulid, "extension_version": "3.40.0", "platform": "Visual Studio Code", "distinct_id": "d-1"}
    records = [
        ("task.created", {**meta, "apiProvider": "anthropic"}),
        ("task.tokens", {**meta, "tokensIn": 1500, "tokensOut": 200, "model": "claude-sonnet-4-5"}),
        ("task.tool_used", {**meta, "tool": "read_file", "autoApproved": True, "success": True,
                            "modelId": "claude-sonnet-4-5", "provider": "anthropic"}),
        ("task.tool_used", {**meta, "tool": "replace_in_file", "autoApproved": False, "success": False}),
        ("task.mcp_tool_called", {**meta, "serverName": "github", "toolName": "create_issue", "status": "started",
                                  "argumentKeys": '["owner","repo","title"]'}),
        ("task.mcp_tool_called", {**meta, "serverName": "github", "toolName": "create_issue", "status": "error",
                                  "errorMessage": "404 Not Found"}),
        ("task.checkpoint_used", {**meta, "action": "commit_created", "durationMs": 35}),
        ("task.checkpoint_used", {**meta, "action": "restored", "durationMs": 80}),
        ("task.terminal_execution", {"success": True, "terminalType": "standalone", "method": "child_process",
                                     "exitCode": 2}),
        ("task.feedback", {**meta, "feedbackType": "thumbs_up"}),
        ("task.completed", meta),
    ]
    results = sdk_logs(server.url, key, {"service.name": "cline"}, "cline",
                       [(name, start + index * 1_000_000, attributes) for index, (name, attributes) in enumerate(records)])
    assert results == [LogRecordExportResult.SUCCESS]

    events = events_of(server, email)
    assert kinds(events) == {"task.started": 1, "llm.request": 1, "tool.result": 3, "tool.call": 1,
                             "checkpoint.saved": 1, "task.rolled_back": 1, "command.exec": 1, "agent.message": 1,
                             "task.completed": 1}
    assert {event["client"] for event in events} == {"cline"}
    assert {event["task_id"] for event in events if event["kind"] != "command.exec"} == {ulid}
    by_kind = {event["kind"]: event for event in events}
    request = by_kind["llm.request"]
    assert (request["tokens_in"], request["tokens_out"], request["resource"]) == (1500, 200, "claude-sonnet-4-5")
    results = {(event["resource"], event["outcome"]) for event in events if event["kind"] == "tool.result"}
    assert results == {("read_file", "ok"), ("replace_in_file", "error"), ("github/create_issue", "error")}
    mcp = [event for event in events if event["resource"] == "github/create_issue" and event["kind"] == "tool.result"]
    assert mcp[0]["attributes"]["server"] == "github" and mcp[0]["attributes"]["error"] == "404 Not Found"
    assert by_kind["tool.call"]["attributes"]["argument_keys"] == ["owner", "repo", "title"]
    command = by_kind["command.exec"]
    assert (command["outcome"], command["attributes"]["exit_code"]) == ("error", 2)
    assert by_kind["agent.message"]["attributes"]["type"] == "task.feedback"
    assert by_kind["task.started"]["attributes"]["provider"] == "anthropic"


# ---- whose events they are --------------------------------------------------------------------


def test_an_admin_collector_reports_each_record_for_the_user_it_names(server, make_user):
    someone, _ = make_user(key=False)
    collector, collector_key = make_user(roles=("admin",))
    resource, records = claude_records()
    resource = {**resource, "user.email": someone}  # OTEL_RESOURCE_ATTRIBUTES=user.email=...
    assert sdk_logs(server.url, collector_key, resource, "com.anthropic.claude_code.events",
                    records) == [LogRecordExportResult.SUCCESS]
    assert kinds(events_of(server, someone)) == CLAUDE_LOG_KINDS
    assert events_of(server, collector) == []

    newcomer = f"newcomer-{os.urandom(4).hex()}@example.com"  # not a Corral user yet: kept as named
    body = log_body([{"body": "claude_code.user_prompt", "attributes": {
        "session.id": text("s-newcomer"), "user.email": text(newcomer.upper()), "prompt_length": text("5")}}])
    assert post(server, "/v1/logs", collector_key, body).json() == {}
    (event,) = events_of(server, newcomer)
    assert event["attributes"]["unknown_user"] is True and event["key_id"] is not None


def test_a_developer_cannot_file_records_under_someone_else(server, make_user):
    victim, _ = make_user(key=False)
    developer, key = make_user()
    body = log_body([
        {"body": "claude_code.api_request", "attributes": {
            "session.id": text("s-claim"), "user.email": text(victim), "model": text("claude-opus-4-8"),
            "input_tokens": text("10"), "output_tokens": text("2"), "cost_usd": text("0.5")}},
        {"body": "claude_code.user_prompt", "attributes": {
            "session.id": text("s-claim"), "user.email": text(developer.upper()), "prompt_length": text("3")}},
    ])
    response = post(server, "/v1/logs", key, body)
    assert response.status_code == 200 and response.json() == {}  # not refused: an exporter could not fix it
    assert events_of(server, victim) == []
    events = {event["kind"]: event for event in events_of(server, developer)}
    assert set(events) == {"llm.request", "user.prompt"}
    assert events["llm.request"]["attributes"]["claimed_user"] == victim
    assert events["llm.request"]["cost_usd"] == 0.5  # "0.5" arrives as text
    assert "claimed_user" not in events["user.prompt"]["attributes"]  # naming oneself is no claim


def test_attribution_is_decided_by_the_caller():
    event = otlp.IngestEvent(kind="user.prompt", time=datetime.now(timezone.utc))
    reported = [otlp.Reported(event, "d1", "Other@Example.com"), otlp.Reported(event, "d2", "me@example.com"),
                otlp.Reported(event, "d3", "not an email"), otlp.Reported(event, "d4", None)]
    as_admin = otlp.attribute(reported, "me@example.com", may_report_for_others=True)
    assert [item.user for item in as_admin] == ["other@example.com", None, None, None]
    assert as_admin[2].attributes == {"claimed_user": "not an email"}
    as_developer = otlp.attribute(reported, "me@example.com", may_report_for_others=False)
    assert [item.user for item in as_developer] == [None, None, None, None]
    assert [item.attributes.get("claimed_user") for item in as_developer] == [
        "Other@Example.com", None, "not an email", None]
    # the key hashes the record and its owner: one record, two owners, two keys
    assert as_admin[0].key != as_developer[0].key and as_admin[3].key == as_developer[3].key


# ---- values of the wrong type ---------------------------------------------------------------


def test_a_record_with_a_value_of_the_wrong_type_is_left_out_and_counted(server, make_user):
    email, key = make_user()
    body = log_body([
        {"body": "claude_code.api_request", "attributes": {"session.id": text("s-types"),
                                                           "input_tokens": text("lots"), "model": text("m")}},
        {"body": "claude_code.tool_result", "attributes": {"session.id": text("s-types"), "tool_name": text("Read"),
                                                           "success": text("maybe")}},
        {"body": "claude_code.api_request", "attributes": {"session.id": text("s-types"),
                                                           "cost_usd": {"doubleValue": -1}, "model": text("m")}},
        {"body": "claude_code.tool_result", "attributes": {"session.id": text("s-types"), "tool_name": text("Bash"),
                                                           "success": text("false"), "duration_ms": text("12.5"),
                                                           "tool_parameters": text('{"full_command": "make test"}')}},
    ])
    response = post(server, "/v1/logs", key, body)
    assert response.status_code == 200
    partial = response.json()["partialSuccess"]
    assert partial["rejectedLogRecords"] == "3"
    assert "input_tokens should be a whole number, not 'lots'" in partial["errorMessage"]
    assert "success should be true or false, not 'maybe'" in partial["errorMessage"]
    assert "cost_usd" in partial["errorMessage"]
    (command,) = events_of(server, email)
    assert (command["kind"], command["resource"], command["outcome"], command["duration_ms"]) == (
        "command.exec", "make test", "error", 12.5)


def test_a_metric_point_that_is_not_a_number_is_left_out(server, make_user):
    email, key = make_user()
    points = [{"asDouble": "NaN", "timeUnixNano": "1795677093967000000"},
              {"asInt": "7", "timeUnixNano": "1795677093967000000"}]
    body = {"resourceMetrics": [{"scopeMetrics": [{"metrics": [
        {"name": "claude_code.commit.count", "sum": {"aggregationTemporality": 2, "dataPoints": points}}]}]}]}
    response = post(server, "/v1/metrics", key, json.dumps(body).encode())
    assert response.status_code == 200
    assert response.json()["partialSuccess"]["rejectedDataPoints"] == "1"
    (event,) = events_of(server, email, "otel.metric")
    assert (event["attributes"]["value"], event["attributes"]["temporality"]) == (7, "cumulative")


def test_attribute_values_sent_as_text_are_read_as_what_they_spell():
    attributes = {"success": "true", "cost_usd": "0.0123", "input_tokens": "19547", "status_code": "undefined",
                  "flag": "TRUE", "tokens": 3.0}
    assert otlp.as_bool(attributes, "success") is True and otlp.as_bool(attributes, "flag") is True
    assert otlp.as_float(attributes, "cost_usd") == 0.0123
    assert otlp.as_int(attributes, "input_tokens") == 19547 and otlp.as_int(attributes, "tokens") == 3
    assert otlp.as_int(attributes, "status_code") is None  # JavaScript's String(undefined)
    for reader, value in ((otlp.as_int, True), (otlp.as_int, "1.5"), (otlp.as_float, "inf"), (otlp.as_bool, 1)):
        with pytest.raises(otlp.WrongType):
            reader({"x": value}, "x")


ATTRIBUTE_NAMES = ["session.id", "ulid", "model", "input_tokens", "output_tokens", "cost_usd", "duration_ms",
                   "cache_read_tokens", "status_code", "attempt", "error", "tool_name", "success", "tool_parameters",
                   "tool_input", "decision", "prompt", "prompt_length", "user.email", "mode", "apiProvider",
                   "tokensIn", "tokensOut", "totalCost", "tool", "autoApproved", "serverName", "toolName", "status",
                   "argumentKeys", "action", "exitCode", "errorStatus", "event.timestamp", "event.name"]
scalars = st.one_of(st.text(max_size=30), st.booleans(), st.integers(-2**63, 2**63 - 1), st.floats(),
                    st.binary(max_size=8), st.sampled_from(["true", "12", "-3", "1e400", "undefined", '{"a": [1]}']))
any_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                             st.dictionaries(st.text(max_size=5), inner, max_size=3)),
                          max_leaves=6)


def any_value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, list):
        return AnyValue(array_value=ArrayValue(values=[any_value(item) for item in value]))
    if isinstance(value, dict):
        return AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key=key, value=any_value(item))
                                                          for key, item in value.items()]))
    return AnyValue(string_value=value)


@given(name=st.sampled_from([*otlp.MAPPINGS, "claude_code.something_new", "", "a plain log line"]),
       attributes=st.dictionaries(st.sampled_from(ATTRIBUTE_NAMES), any_values, max_size=8),
       time=st.integers(0, 2**64 - 1))
@settings(max_examples=200, deadline=None, derandomize=True, database=None)
def test_no_attribute_value_breaks_the_reading(name, attributes, time):
    record = LogRecord(time_unix_nano=time, body=AnyValue(string_value=name),
                       attributes=[KeyValue(key=key, value=any_value(value)) for key, value in attributes.items()])
    request = ExportLogsServiceRequest(resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=[record])])])
    reading = otlp.read_logs(request, datetime.now(timezone.utc))
    assert len(reading.reported) + reading.rejected == 1
    for event in otlp.attribute(reading.reported, "me@example.com", may_report_for_others=True):
        json.dumps(event.attributes, allow_nan=False)  # storable as JSON on every database
        assert "prompt" not in event.attributes and "tool_input" not in event.attributes


def test_mcp_tools_are_named_server_slash_tool():
    assert otlp._tool_target("mcp__github__create_issue", {}) == (
        "github/create_issue", {"server": "github", "tool": "create_issue"})
    assert otlp._tool_target("mcp__github__create_issue", {"mcp_server_name": "gh", "mcp_tool_name": "issue"})[0] == \
        "gh/issue"
    assert otlp._tool_target("Read", {}) == ("Read", {"tool": "Read"})


# ---- bad requests get OTLP's answers ----------------------------------------------------------


def test_malformed_protobuf_is_a_400_in_protobuf(server, make_user):
    _, key = make_user()
    response = post(server, "/v1/logs", key, b"\x0a\xff\xff\xff\xff\x0f garbage", "application/x-protobuf")
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/x-protobuf"
    status = Status.FromString(response.content)
    assert status.code == 3 and "not a valid protobuf ExportLogsServiceRequest" in status.message


@pytest.mark.parametrize("body, expected", [
    (b'{"resourceLogs": [', "not valid JSON"),
    (b"[1, 2]", "is an object with resourceLogs"),
    (b'{"resourceLogs": {"scopeLogs": []}}', "must be in []"),
    (b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": "yesterday"}]}]}]}', "timeUnixNano"),
    (b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"traceId": "not-hex!"}]}]}]}', "not hexadecimal"),
    (b"[" * 100_000 + b"]" * 100_000, "body is larger"),
    (b"[" * 30_000 + b"]" * 30_000, "not valid JSON"),
], ids=["truncated", "array", "wrong-shape", "wrong-type", "trace-id", "too-large", "too-deep"])
def test_malformed_json_is_a_400_in_json(server, make_user, body, expected):
    _, key = make_user()
    response = post(server, "/v1/logs", key, body)
    assert response.status_code == (413 if expected == "body is larger" else 400), response.text
    assert response.headers["content-type"] == "application/json"
    assert expected in response.json()["message"]


def test_otlp_json_trace_ids_are_hex(server, make_user):
    email, key = make_user()
    body = json.loads(log_body([{"body": "claude_code.user_prompt",
                                 "attributes": {"session.id": text("s-trace"), "prompt_length": text("1")}}]))
    body["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0].update(
        traceId="5B8EFFF798038103D269B633813FC60C", spanId="EEE19B7EC3C1B174")
    assert post(server, "/v1/logs", key, json.dumps(body).encode()).json() == {}
    assert kinds(events_of(server, email)) == {"user.prompt": 1}


def test_other_content_types_and_encodings_are_a_415(server, make_user):
    _, key = make_user()
    response = post(server, "/v1/logs", key, b"hello", "text/plain")
    assert response.status_code == 415
    assert "application/x-protobuf or application/json" in rpc_status(response).message
    response = post(server, "/v1/metrics", key, b"{}", "application/json", **{"content-encoding": "br"})
    assert response.status_code == 415 and "gzip" in rpc_status(response).message


def test_a_gzip_bomb_is_refused_before_it_inflates(server, make_user):
    _, key = make_user()
    bomb = gzip.compress(b"\0" * (50 * 1024 * 1024))  # 50 MiB of zeros in ~50 kB: under the 64 KiB body limit
    assert len(bomb) < 64 * 1024
    response = post(server, "/v1/logs", key, bomb, "application/x-protobuf", **{"content-encoding": "gzip"})
    assert response.status_code == 413
    assert "inflates to more than this server accepts" in Status.FromString(response.content).message
    truncated = gzip.compress(log_body([]))[:-10]
    response = post(server, "/v1/logs", key, truncated, **{"content-encoding": "gzip"})
    assert response.status_code == 400 and "gzip" in response.json()["message"]


def test_an_export_without_a_valid_key_is_a_401_the_exporter_does_not_retry(server, make_user):
    body = log_body([{"body": "claude_code.user_prompt", "attributes": {"prompt_length": text("1")}}])
    for key in (None, "ck_" + "x" * 49):
        response = post(server, "/v1/logs", key, body)
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/json"
        assert rpc_status(response).code == 16
        response = post(server, "/v1/metrics", key, b"", "application/x-protobuf")
        assert response.status_code == 401
        assert Status.FromString(response.content).message

    resource, records = claude_records()
    assert sdk_logs(server.url, "ck_" + "y" * 49, resource, "com.anthropic.claude_code.events",
                    records[:1]) == [LogRecordExportResult.FAILURE]


def test_a_key_without_the_ingest_scope_is_a_403(server, make_user):
    _, key = make_user(scopes=("read",))
    response = post(server, "/v1/logs", key, b"", "application/x-protobuf")
    assert response.status_code == 403 and "ingest" in Status.FromString(response.content).message


def test_other_methods_and_an_empty_export(server, make_user):
    _, key = make_user()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        response = client.get("/v1/logs", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 405 and rpc_status(response).message
    response = post(server, "/v1/metrics", key, b"", "application/x-protobuf")  # nothing in it: a success
    assert response.status_code == 200 and response.content == b""


# ---- docs/otlp.md --------------------------------------------------------------------------


def _doc_blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", (ROOT / "docs/otlp.md").read_text(), re.S | re.M)


def _exported(script: str, env: dict[str, str]) -> dict[str, str]:
    """The variables a documented block exports, as the shell leaves them."""
    result = subprocess.run(["bash", "-eu", "-c", script + "\nenv -0"], env=env, capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr
    variables = dict(item.split("=", 1) for item in result.stdout.decode().split("\0") if "=" in item)
    return {name: value for name, value in variables.items() if name.startswith(("OTEL_", "CLAUDE_CODE_", "CLINE_"))}


@pytest.fixture
def clean_otel_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    yield monkeypatch


def test_the_documented_settings_reach_corral(server, make_user, clean_otel_env):
    email, key = make_user()
    env = {"PATH": os.environ["PATH"], "CORRAL_URL": server.url, "CORRAL_KEY": key}
    claude, cline, check = _doc_blocks("sh")

    claude_env = _exported(claude, env)
    assert claude_env["OTEL_EXPORTER_OTLP_HEADERS"] == f"Authorization=Bearer {key}"
    (settings,) = _doc_blocks("json")
    assert set(json.loads(settings)["env"]) == set(claude_env)  # managed settings set the same variables
    cline_env = {name.removeprefix("CLINE_"): value for name, value in _exported(cline, env).items()}
    assert cline_env.items() >= {name: claude_env[name] for name in (
        "OTEL_LOGS_EXPORTER", "OTEL_METRICS_EXPORTER", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_HEADERS")}.items()

    # The SDK's exporter configured by those variables alone (endpoint and headers from the environment).
    for name, value in claude_env.items():
        clean_otel_env.setenv(name, value)
    exporter = RecordingLogExporter()
    resource, records = claude_records()
    assert sdk_logs("", None, resource, "com.anthropic.claude_code.events", records,
                    exporter=exporter) == [LogRecordExportResult.SUCCESS]
    assert kinds(events_of(server, email)) == CLAUDE_LOG_KINDS

    result = subprocess.run(["bash", "-eu", "-c", check], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [event["task_id"] for event in events_of(server, email, "user.prompt")].count("docs-check-session") == 1
