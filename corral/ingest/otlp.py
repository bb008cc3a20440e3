"""What OpenTelemetry exports mean: Claude Code's and Cline's log events, and any metric's data
points, read from a decoded OTLP request (`corral.ingest.otlp_wire`) into the events of
docs/events.md, with a count of the records left out and why. Pure: messages in, events out.

It never keeps a prompt, a response or a tool's input, whatever the exporter was told to log,
and never a secret-looking attribute. It notes the `user.email` a record names, and `attribute`
decides whose the event is: the named user only when the caller may report for others."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from pydantic import ValidationError

from corral.errors import InvalidRequest
from corral.identity.directory import normalise_email
from corral.ingest.schema import IngestEvent, parse_time
from corral.policy.schema import SECRET_VALUE, looks_secret, secret_name

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
COMMAND_CHARS = 500  # a command line is kept to its first 500 characters (docs/events.md)
TEXT_CHARS = 500  # error messages and other free text
MAX_DEPTH = 8  # nested attribute values deeper than this are cut
MAX_PROBLEMS = 5  # reasons quoted in a partial-success message
# Attributes that carry what a person wrote or a tool read: never stored.
CONTENT = frozenset({"prompt", "response", "completion", "content", "text", "body", "tool_input", "tool_parameters",
                     "tool_output", "tool_result", "output", "arguments", "messages"})
_ABSENT = frozenset({"", "undefined", "null", "none"})  # JavaScript exporters write String(undefined)
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.:/-]{0,99}")
_TOKEN_COUNT = re.compile(r"tokens", re.IGNORECASE)  # input_tokens, tokensIn: counts, not credentials
_TEMPORALITY = {1: "delta", 2: "cumulative"}


class WrongType(ValueError):
    """A record's attribute holds a value of a type its meaning cannot take."""


@dataclass(frozen=True)
class Record:
    """One log record, its attributes read into plain values."""

    name: str
    attributes: dict[str, Any]
    client: str | None


@dataclass(frozen=True)
class Reported:
    """An event read from one record, before it is attributed: `digest` identifies the record
    (the same record sent again has the same one) and `claimed_user` is the user.email it names."""

    event: IngestEvent
    digest: str
    claimed_user: str | None


@dataclass
class Reading:
    """What one export held: the events read, and how many records were left out and why."""

    signal: str
    reported: list[Reported] = field(default_factory=list)
    rejected: int = 0
    problems: list[str] = field(default_factory=list)
    unknown: Counter[str] = field(default_factory=Counter)  # names kept as agent.message

    def reject(self, what: str, reason: str) -> None:
        self.rejected += 1
        problem = f"{what}: {reason}"
        if len(self.problems) < MAX_PROBLEMS and problem not in self.problems:
            self.problems.append(problem)

    def message(self) -> str:
        if not self.rejected:
            return ""
        what = "log records" if self.signal == "logs" else "data points"
        return f"{self.rejected} {what} rejected: " + "; ".join(self.problems)


# ---- values -------------------------------------------------------------------------------


def value_of(value: AnyValue, depth: int = 0) -> Any:
    """An AnyValue as a plain JSON-able value (bytes as hex, a non-finite number as text)."""
    which = value.WhichOneof("value")
    if which is None:
        return None
    if depth >= MAX_DEPTH and which in ("array_value", "kvlist_value"):
        return "[nested too deep]"
    if which == "array_value":
        return [value_of(item, depth + 1) for item in value.array_value.values]
    if which == "kvlist_value":
        return attributes_of(value.kvlist_value.values, depth + 1)
    if which == "bytes_value":
        return value.bytes_value[:256].hex()
    if which == "double_value" and not math.isfinite(value.double_value):
        return str(value.double_value)
    return getattr(value, which)


def attributes_of(pairs: Iterable[KeyValue], depth: int = 0) -> dict[str, Any]:
    return {pair.key: value_of(pair.value, depth) for pair in pairs}


def _show(value: Any) -> str:
    return repr(value)[:40]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in _ABSENT)


def as_int(attributes: dict[str, Any], name: str) -> int | None:
    value = attributes.get(name)
    if _missing(value):
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            try:
                number = float(value)
            except ValueError:
                number = math.nan
            if number.is_integer():
                return int(number)
    raise WrongType(f"{name} should be a whole number, not {_show(value)}")


def as_float(attributes: dict[str, Any], name: str) -> float | None:
    value = attributes.get(name)
    if _missing(value):
        return None
    number = math.nan
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            pass
    if not math.isfinite(number):
        raise WrongType(f"{name} should be a number, not {_show(value)}")
    return number


def as_bool(attributes: dict[str, Any], name: str) -> bool | None:
    value = attributes.get(name)
    if _missing(value):
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise WrongType(f"{name} should be true or false, not {_show(value)}")


def as_text(attributes: dict[str, Any], name: str, limit: int = TEXT_CHARS) -> str | None:
    value = attributes.get(name)
    if _missing(value):
        return None
    if isinstance(value, str):
        return _clean(value, limit)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise WrongType(f"{name} should be text, not {_show(value)}")


def _clean(text: str, limit: int) -> str:
    """Free text as stored: credentials blanked, cut to `limit` characters."""
    return SECRET_VALUE.sub("[redacted]", text)[:limit]


def _json_object(value: Any) -> dict[str, Any]:
    """Claude Code sends tool parameters as a JSON text; anything else reads as nothing."""
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value.startswith("{"):
        try:
            parsed = json.loads(value)
        except (ValueError, RecursionError):
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}


def _json_list(value: Any) -> list[Any] | None:
    """Cline flattens a list attribute into its JSON text."""
    if isinstance(value, list):
        return value[:50]
    if isinstance(value, str) and value.startswith("[") and len(value) <= 2000:
        try:
            parsed = json.loads(value)
        except (ValueError, RecursionError):
            return None
        return parsed[:50] if isinstance(parsed, list) else None
    return None


def _without_none(values: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value is not None}


def secret_looking(name: str, value: Any) -> bool:
    """An attribute never kept: named like a credential (token counts aside) or holding one."""
    if secret_name(name) and not _TOKEN_COUNT.search(name):
        return True
    return isinstance(value, str) and looks_secret(value)


def kept_attributes(attributes: dict[str, Any], limit: int = 40) -> dict[str, Any]:
    """An unmapped record's or a metric point's attributes as kept: no content, no secrets,
    short texts."""
    kept: dict[str, Any] = {}
    for name, value in attributes.items():
        if len(kept) >= limit:
            break
        if name in CONTENT or name in ("user.email", "event.name") or secret_looking(name, value):
            continue
        if isinstance(value, str):
            value = value[:200]
        elif isinstance(value, (list, dict)):
            value = json.dumps(value, default=str)[:200]
        kept[name[:100]] = value
    return kept


# ---- records ------------------------------------------------------------------------------


def client_of(resource: dict[str, Any], scope: str, name: str) -> str | None:
    """Which agent exported: from service.name, else the scope or the event's name."""
    service = resource.get("service.name")
    service = service.strip().lower() if isinstance(service, str) else ""
    if service.startswith("claude") or name.startswith("claude_code.") or scope.startswith("com.anthropic.claude_code"):
        return "claude-code"
    if service.startswith("cline") or scope == "cline":
        return "cline"
    return service[:50] or None


def event_name(record: Any, attributes: dict[str, Any], service: str) -> str:
    """A log record's event name: its event_name field, a body that is a name (Claude Code and
    Cline both put it there), or the `event.name` attribute."""
    name = record.event_name
    body = record.body.string_value if record.body.WhichOneof("value") == "string_value" else ""
    if not name and _NAME.fullmatch(body):
        name = body
    if not name and isinstance(attributes.get("event.name"), str):
        name = attributes["event.name"]
    if name and "." not in name and service.startswith("claude"):
        name = f"claude_code.{name}"  # event.name alone is "api_request"
    return name[:100]


def time_of(unix_nano: int, fallback: Any = None) -> datetime | None:
    if unix_nano:
        try:
            return EPOCH + timedelta(microseconds=unix_nano // 1000)
        except OverflowError:
            raise WrongType(f"time {unix_nano} is out of range") from None
    if isinstance(fallback, str):
        try:
            return parse_time(fallback)
        except ValueError as error:
            raise WrongType(str(error)) from None
    return None


def task_id_of(attributes: dict[str, Any]) -> str | None:
    """Claude Code's session, or Cline's task (its ulid; older exports say taskId)."""
    for name in ("session.id", "ulid", "taskId", "task_id", "sessionId"):
        value = as_text(attributes, name, limit=1000)
        if value is not None:
            return value
    return None


def digest_of(*parts: bytes) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(len(part).to_bytes(8, "big"))
        hasher.update(part)
    return hasher.hexdigest()


def claimed_user(attributes: dict[str, Any], resource: dict[str, Any]) -> str | None:
    value = attributes.get("user.email", resource.get("user.email"))
    if _missing(value):
        return None
    if not isinstance(value, str):
        raise WrongType(f"user.email should be text, not {_show(value)}")
    return value.strip()


# ---- Claude Code --------------------------------------------------------------------------


def _tool_target(tool: str, parameters: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(resource, attributes) of a tool: `server/tool` for MCP tools (`mcp__server__tool`)."""
    server, name = parameters.get("mcp_server_name"), parameters.get("mcp_tool_name")
    if not (isinstance(server, str) and isinstance(name, str)) and tool.startswith("mcp__"):
        server, _, name = tool[len("mcp__"):].partition("__")
    if isinstance(server, str) and isinstance(name, str) and server and name:
        return f"{server}/{name}"[:200], {"server": server[:100], "tool": name[:100]}
    return tool[:200], {"tool": tool[:100]}


def _command(parameters: dict[str, Any], inputs: dict[str, Any]) -> str | None:
    for value in (parameters.get("full_command"), parameters.get("bash_command"), inputs.get("command")):
        if isinstance(value, str) and value.strip():
            return _clean(value.strip(), COMMAND_CHARS)
    return None


def _path(inputs: dict[str, Any]) -> str | None:
    for name in ("file_path", "notebook_path", "path"):
        if isinstance(inputs.get(name), str):
            return _clean(inputs[name], TEXT_CHARS)
    return None


def _outcome(success: bool | None) -> str | None:
    return None if success is None else ("ok" if success else "error")


def claude_api_request(record: Record) -> dict[str, Any]:
    a = record.attributes
    model = as_text(a, "model", 200)
    return {"kind": "llm.request", "resource": model, "outcome": "ok", "tokens_in": as_int(a, "input_tokens"),
            "tokens_out": as_int(a, "output_tokens"), "cost_usd": as_float(a, "cost_usd"),
            "duration_ms": as_float(a, "duration_ms"),
            "attributes": {"provider": "anthropic", "model": model, "request_id": as_text(a, "request_id", 200),
                           "cache_read_tokens": as_int(a, "cache_read_tokens"),
                           "cache_creation_tokens": as_int(a, "cache_creation_tokens"),
                           "prompt_id": as_text(a, "prompt.id", 200)}}


def claude_api_error(record: Record) -> dict[str, Any]:
    a = record.attributes
    model = as_text(a, "model", 200)
    return {"kind": "llm.request", "resource": model, "outcome": "error", "duration_ms": as_float(a, "duration_ms"),
            "attributes": {"provider": "anthropic", "model": model, "status_code": as_int(a, "status_code"),
                           "attempt": as_int(a, "attempt"), "error": as_text(a, "error"),
                           "request_id": as_text(a, "request_id", 200), "prompt_id": as_text(a, "prompt.id", 200)}}


def claude_tool_result(record: Record) -> dict[str, Any]:
    a = record.attributes
    tool = as_text(a, "tool_name", 200) or "?"
    parameters, inputs = _json_object(a.get("tool_parameters")), _json_object(a.get("tool_input"))
    common = {"outcome": _outcome(as_bool(a, "success")), "duration_ms": as_float(a, "duration_ms")}
    details = {"tool_use_id": as_text(a, "tool_use_id", 200), "error": as_text(a, "error"),
               "prompt_id": as_text(a, "prompt.id", 200)}
    if tool == "Bash":
        return {"kind": "command.exec", "resource": _command(parameters, inputs) or "Bash", **common,
                "attributes": {"tool": "Bash", **details}}
    resource, target = _tool_target(tool, parameters)
    return {"kind": "tool.result", "resource": resource, **common,
            "attributes": {**target, "path": _path(inputs), **details}}


def claude_tool_decision(record: Record) -> dict[str, Any]:
    a = record.attributes
    tool = as_text(a, "tool_name", 200) or "?"
    parameters = _json_object(a.get("tool_parameters"))
    resource, target = _tool_target(tool, parameters)
    if tool == "Bash":
        resource = _command(parameters, {}) or resource
    return {"kind": "tool.decision", "resource": resource,
            "attributes": {**target, "decision": as_text(a, "decision", 50), "source": as_text(a, "source", 50),
                           "tool_use_id": as_text(a, "tool_use_id", 200), "prompt_id": as_text(a, "prompt.id", 200)}}


def claude_user_prompt(record: Record) -> dict[str, Any]:
    a = record.attributes
    length = as_int(a, "prompt_length")
    if length is None and isinstance(a.get("prompt"), str):
        length = len(a["prompt"])
    return {"kind": "user.prompt", "attributes": {"prompt_length": length, "prompt_id": as_text(a, "prompt.id", 200)}}


# ---- Cline --------------------------------------------------------------------------------


def cline_task_created(record: Record) -> dict[str, Any]:
    return {"kind": "task.started", "attributes": {"provider": as_text(record.attributes, "apiProvider", 100)}}


def cline_task_restarted(record: Record) -> dict[str, Any]:
    return {"kind": "task.resumed", "attributes": {"provider": as_text(record.attributes, "apiProvider", 100)}}


def cline_task_completed(record: Record) -> dict[str, Any]:
    return {"kind": "task.completed", "outcome": "ok"}


def cline_tokens(record: Record) -> dict[str, Any]:
    a = record.attributes
    model = as_text(a, "model", 200) or as_text(a, "modelId", 200)
    cost = as_float(a, "totalCost")
    return {"kind": "llm.request", "resource": model, "outcome": "ok", "tokens_in": as_int(a, "tokensIn"),
            "tokens_out": as_int(a, "tokensOut"), "cost_usd": cost if cost is not None else as_float(a, "cost"),
            "attributes": {"model": model, "provider": as_text(a, "provider", 100) or as_text(a, "apiProvider", 100),
                           "cache_read_tokens": as_int(a, "cacheReadTokens"),
                           "cache_write_tokens": as_int(a, "cacheWriteTokens")}}


def cline_tool_used(record: Record) -> dict[str, Any]:
    a = record.attributes
    tool = as_text(a, "tool", 200) or "?"
    return {"kind": "tool.result", "resource": tool, "outcome": _outcome(as_bool(a, "success")),
            "attributes": {"tool": tool[:100], "auto_approved": as_bool(a, "autoApproved"),
                           "model": as_text(a, "modelId", 200), "provider": as_text(a, "provider", 100)}}


def cline_mcp_tool_called(record: Record) -> dict[str, Any]:
    a = record.attributes
    server, tool = as_text(a, "serverName", 100) or "?", as_text(a, "toolName", 100) or "?"
    status = as_text(a, "status", 32)
    attributes = {"server": server, "tool": tool, "error": as_text(a, "errorMessage"),
                  "argument_keys": _json_list(a.get("argumentKeys"))}
    if status == "started":  # the call began; its result follows as another record
        return {"kind": "tool.call", "resource": f"{server}/{tool}", "outcome": "started", "attributes": attributes}
    outcome = {"success": "ok", "error": "error"}.get(status or "", status)
    return {"kind": "tool.result", "resource": f"{server}/{tool}", "outcome": outcome, "attributes": attributes}


def cline_checkpoint_used(record: Record) -> dict[str, Any]:
    a = record.attributes
    action = as_text(a, "action", 64) or ""
    attributes = {"action": action, "duration_ms": as_float(a, "durationMs")}
    if "restore" in action:
        return {"kind": "task.rolled_back", "attributes": attributes}
    if action == "diff_generated":  # showing a diff saves nothing
        return {"kind": "agent.message", "attributes": {"type": record.name, **attributes}}
    return {"kind": "checkpoint.saved", "attributes": attributes}


def cline_terminal_execution(record: Record) -> dict[str, Any]:
    a = record.attributes
    exit_code = as_int(a, "exitCode")
    outcome = _outcome(exit_code == 0) if exit_code is not None else _outcome(as_bool(a, "success"))
    return {"kind": "command.exec", "outcome": outcome,
            "attributes": {"exit_code": exit_code, "terminal_type": as_text(a, "terminalType", 50),
                           "method": as_text(a, "method", 50)}}


def cline_provider_api_error(record: Record) -> dict[str, Any]:
    a = record.attributes
    model = as_text(a, "model", 200)
    return {"kind": "llm.request", "resource": model, "outcome": "error",
            "attributes": {"model": model, "provider": as_text(a, "provider", 100),
                           "status_code": as_int(a, "errorStatus"), "request_id": as_text(a, "requestId", 200),
                           "error": as_text(a, "errorMessage")}}


def cline_summarize_task(record: Record) -> dict[str, Any]:
    a = record.attributes
    return {"kind": "task.condensed", "attributes": {"model": as_text(a, "modelId", 200),
                                                     "tokens": as_int(a, "currentTokens")}}


def unknown_event(record: Record) -> dict[str, Any]:
    """An event Corral has no mapping for: kept, with its harmless attributes, as agent.message."""
    return {"kind": "agent.message", "attributes": {"type": record.name or "log",
                                                    **kept_attributes(record.attributes)}}


MAPPINGS: dict[str, Callable[[Record], dict[str, Any]]] = {
    "claude_code.api_request": claude_api_request,
    "claude_code.api_error": claude_api_error,
    "claude_code.tool_result": claude_tool_result,
    "claude_code.tool_decision": claude_tool_decision,
    "claude_code.user_prompt": claude_user_prompt,
    "task.created": cline_task_created,
    "task.restarted": cline_task_restarted,
    "task.completed": cline_task_completed,
    "task.tokens": cline_tokens,
    "task.tool_used": cline_tool_used,
    "task.mcp_tool_called": cline_mcp_tool_called,
    "task.checkpoint_used": cline_checkpoint_used,
    "task.terminal_execution": cline_terminal_execution,
    "task.provider_api_error": cline_provider_api_error,
    "task.summarize_task": cline_summarize_task,
}


def _event(fields: dict[str, Any], time: datetime, client: str | None, attributes: dict[str, Any]) -> IngestEvent:
    """The IngestEvent of a mapped record; ValidationError when a value is out of its range."""
    fields = {**fields, "attributes": _without_none(fields.get("attributes", {}))}
    if "task_id" not in fields:
        fields["task_id"] = task_id_of(attributes)
    mode = as_text(attributes, "mode", 64)
    if mode is not None:
        fields.setdefault("mode", mode)
    return IngestEvent(time=time, client=client, **fields)


def _problem(error: Exception) -> str:
    if isinstance(error, ValidationError):
        first = error.errors()[0]
        return f"{'.'.join(str(part) for part in first['loc']) or 'event'}: {first['msg']}"
    return str(error)


# ---- requests -----------------------------------------------------------------------------


def read_logs(request: ExportLogsServiceRequest, now: datetime) -> Reading:
    """The events of every log record; a record that cannot be read is counted, not fatal."""
    reading = Reading("logs")
    for resource_logs in request.resource_logs:
        resource = attributes_of(resource_logs.resource.attributes)
        resource_bytes = resource_logs.resource.SerializeToString(deterministic=True)
        service = str(resource.get("service.name") or "").lower()
        for scope_logs in resource_logs.scope_logs:
            scope = scope_logs.scope.name
            for log in scope_logs.log_records:
                attributes = attributes_of(log.attributes)
                name = event_name(log, attributes, service)
                try:
                    record = Record(name, attributes, client_of(resource, scope, name))
                    time = time_of(log.time_unix_nano or log.observed_time_unix_nano,
                                   attributes.get("event.timestamp")) or now
                    mapping = MAPPINGS.get(name)
                    event = _event((mapping or unknown_event)(record), time, record.client, attributes)
                    claim = claimed_user(attributes, resource)
                except (WrongType, ValidationError) as error:
                    reading.reject(name or "a log record", _problem(error))
                    continue
                if mapping is None:
                    reading.unknown[name or "log"] += 1
                digest = digest_of(b"logs", resource_bytes, scope.encode(),
                                   log.SerializeToString(deterministic=True))
                reading.reported.append(Reported(event, digest, claim))
    return reading


def _points(metric: Any) -> tuple[str | None, Iterable[Any]]:
    """(temporality, data points) of a metric, whatever its type."""
    which = metric.WhichOneof("data")
    if which is None:
        return None, ()
    data = getattr(metric, which)
    return _TEMPORALITY.get(getattr(data, "aggregation_temporality", 0)), data.data_points


def point_values(point: Any) -> dict[str, Any]:
    """value (a number point's, or a distribution's sum), and count for distributions."""
    fields = point.DESCRIPTOR.fields_by_name
    if "count" in fields:  # histograms and summaries
        total = point.sum if not fields["sum"].has_presence or point.HasField("sum") else None
        if total is not None and not math.isfinite(total):
            raise WrongType(f"sum {total} is not a finite number")
        return _without_none({"value": total, "count": point.count})
    which = point.WhichOneof("value")
    value = getattr(point, which) if which else None
    if isinstance(value, float) and not math.isfinite(value):
        raise WrongType(f"value {value} is not a finite number")
    return _without_none({"value": value})


def read_metrics(request: ExportMetricsServiceRequest, now: datetime) -> Reading:
    """An `otel.metric` event for every data point, kept for reference: the five metrics are
    computed from the log events, so no spend is counted twice."""
    reading = Reading("metrics")
    for resource_metrics in request.resource_metrics:
        resource = attributes_of(resource_metrics.resource.attributes)
        resource_bytes = resource_metrics.resource.SerializeToString(deterministic=True)
        for scope_metrics in resource_metrics.scope_metrics:
            scope = scope_metrics.scope.name
            for metric in scope_metrics.metrics:
                temporality, points = _points(metric)
                identity = f"{metric.name}\x00{metric.unit}".encode()
                for point in points:
                    attributes = attributes_of(point.attributes)
                    try:
                        kept = {**kept_attributes(attributes), "name": metric.name[:200], "unit": metric.unit[:50],
                                "temporality": temporality, **point_values(point)}
                        # no task_id: a point exported after its session must not reopen the task
                        event = _event({"kind": "otel.metric", "resource": metric.name[:200], "task_id": None,
                                        "attributes": kept},
                                       time_of(point.time_unix_nano) or now,
                                       client_of(resource, scope, metric.name), attributes)
                        claim = claimed_user(attributes, resource)
                    except (WrongType, ValidationError) as error:
                        reading.reject(metric.name or "a data point", _problem(error))
                        continue
                    digest = digest_of(b"metrics", resource_bytes, scope.encode(), identity,
                                       point.SerializeToString(deterministic=True))
                    reading.reported.append(Reported(event, digest, claim))
    return reading


# ---- whose ------------------------------------------------------------------------------


def attribute(reported: Iterable[Reported], caller_email: str, may_report_for_others: bool) -> list[IngestEvent]:
    """The events to store, each with its owner and idempotency key. A record naming another
    user (user.email) is that user's when the caller may report for others (an admin's shared
    collector); otherwise it stays the caller's, with the claim kept in `attributes.claimed_user`.
    The key hashes the record and its owner, so a retried export stores nothing new."""
    events = []
    for item in reported:
        owner, claim = None, None
        if item.claimed_user is not None:
            try:
                named: str | None = normalise_email(item.claimed_user)
            except InvalidRequest:
                named = None
            if named is not None and named != caller_email and may_report_for_others:
                owner = named
            elif named != caller_email:
                claim = item.claimed_user[:320]
        attributes = {**item.event.attributes, "claimed_user": claim} if claim else item.event.attributes
        key = "otlp:" + digest_of(item.digest.encode(), (owner or caller_email).encode())
        events.append(item.event.model_copy(update={"user": owner, "key": key, "attributes": attributes}))
    return events
