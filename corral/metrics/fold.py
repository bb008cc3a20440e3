"""Folding events into rollup rows: what one event adds to its task and to its hour. Pure: plain
data in, plain data out; `corral.metrics.rollup` does the reading and writing.

When several sources report the same task (Corral's gateway, an OTLP exporter, a task-folder
import), its requests, spend, calls and rollbacks are counted from one source only, the one
ranked highest: the gateway (what Corral itself saw and priced), then OTLP, then everything
else. Lifecycle events (start, completion, failure, resumption) count from every source."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Mapping

from corral.store.tables import HOUR_MEASURES

DIMENSIONS = ("team", "user_email", "client", "mode", "model", "provider", "tool")
MEASURES = HOUR_MEASURES
CALL_OUTCOMES = ("ok", "error", "timeout")
FAILED = ("error", "timeout")
_GATEWAY_FAILURES = {"upstream_error": "error", "protocol_error": "error", "unavailable": "error"}
_STRONG = {"task.completed": "completed", "task.failed": "failed", "task.resumed": None}
_MEASURED = ("llm.request", "task.rolled_back")


def rank_of(source: str | None) -> int:
    """Whose measures count for a task seen by several sources: higher wins."""
    if source is None:
        return 3  # Corral's own gateways
    return 2 if source == "otlp" else 1


@dataclass
class TaskState:
    """A task's rollup row, as it is being folded."""

    user_email: str
    task_id: str
    started_at: datetime
    last_at: datetime
    team: str = ""
    client: str = ""
    mode: str = ""
    model: str = ""
    provider: str = ""
    parent_task_id: str | None = None
    outcome: str | None = None
    outcome_at: datetime | None = None
    rank: int = 0
    requests: int = 0
    spend_usd: float = 0.0
    rollbacks: int = 0

    def row(self) -> dict[str, Any]:
        cycle = (self.outcome_at - self.started_at).total_seconds() if self.outcome == "completed" and self.outcome_at else None
        return {"user_email": self.user_email, "task_id": self.task_id, "team": self.team, "client": self.client,
                "mode": self.mode, "model": self.model, "provider": self.provider,
                "parent_task_id": self.parent_task_id, "started_at": self.started_at, "last_at": self.last_at,
                "outcome": self.outcome, "outcome_at": self.outcome_at,
                "cycle_s": max(cycle, 0.0) if cycle is not None else None, "rank": self.rank,
                "requests": self.requests, "spend_usd": self.spend_usd, "rollbacks": self.rollbacks}


def task_key(event: Mapping[str, Any]) -> tuple[str, str] | None:
    return (event["user_email"] or "", event["task_id"]) if event.get("task_id") else None


def hour_of(time: datetime) -> datetime:
    return time.replace(minute=0, second=0, microsecond=0)


def call_outcome(event: Mapping[str, Any]) -> str | None:
    """ok, error or timeout for a call whose result is known; None for anything else (a call
    only requested, or refused by policy, is not a result)."""
    kind, outcome = event["kind"], event.get("outcome")
    if kind == "tool.call":  # the MCP gateway's: it ran the call (the LLM gateway's are "requested")
        if event.get("source") is not None:
            return None
        outcome = _GATEWAY_FAILURES.get(outcome, outcome)
    elif kind not in ("command.exec", "tool.result"):
        return None
    return outcome if outcome in CALL_OUTCOMES else None


def is_measured(event: Mapping[str, Any]) -> bool:
    """Does the event add to requests, spend, calls or rollbacks (and so follow source ranks)?"""
    kind = event["kind"]
    if kind in ("tool.call", "command.exec", "tool.result"):
        return call_outcome(event) is not None
    return kind in _MEASURED


def model_of(event: Mapping[str, Any]) -> tuple[str, str]:
    """(provider, model) of a model request."""
    attributes = event.get("attributes") or {}
    provider, model = attributes.get("provider"), attributes.get("model")
    if not model and isinstance(attributes.get("target"), str):
        provider, _, model = attributes["target"].partition("/")
    return str(provider or "")[:100], str(model or event.get("resource") or "")[:200]


def tool_of(event: Mapping[str, Any]) -> str:
    """The tool a call used: `server/tool` for MCP, `command:<program>` for a command."""
    attributes = event.get("attributes") or {}
    resource = str(event.get("resource") or "")
    if event["kind"] == "command.exec":
        words = resource.split()
        while words and "=" in words[0] and not words[0].startswith("="):  # FOO=1 make
            words.pop(0)
        program = words[0].rsplit("/", 1)[-1] if words else "?"
        return f"command:{program}"[:200]
    if event["kind"] == "tool.call":
        return resource[:200]
    if attributes.get("server") and attributes.get("tool"):
        return f"{attributes['server']}/{attributes['tool']}"[:200]
    return str(attributes.get("tool") or resource.split(" ", 1)[0] or "?")[:200]


def contributions(event: Mapping[str, Any], task: TaskState | None) -> list[tuple[tuple[Any, ...], dict[str, float]]]:
    """What the event adds to the hour rows: [(hour and dimensions, measures)]. Calls also add to
    their tool's own row (team, client and tool only)."""
    kind, outcome = event["kind"], call_outcome(event)
    measures: dict[str, float] = {}
    provider = model = ""
    if kind == "llm.request":
        provider, model = model_of(event)
        failed = event.get("outcome") in FAILED
        measures = {"requests": 1, "request_errors": int(failed), "tokens_in": event.get("tokens_in") or 0,
                    "tokens_out": event.get("tokens_out") or 0, "spend_usd": event.get("cost_usd") or 0.0}
    elif outcome is not None:
        measures = {"calls": 1, "call_errors": int(outcome in FAILED), "call_timeouts": int(outcome == "timeout")}
        if kind == "command.exec":
            measures.update(commands=1, command_errors=int(outcome in FAILED))
    if not measures:
        return []
    if task is not None:
        provider, model = provider or task.provider, model or task.model
    hour, team, client = hour_of(event["time"]), event.get("team") or "", event.get("client") or ""
    mode = event.get("mode") or (task.mode if task else "") or ""
    rows = [((hour, team, event.get("user_email") or "", client, mode, model, provider, ""), measures)]
    if "calls" in measures:
        calls = {name: measures[name] for name in ("calls", "call_errors", "call_timeouts")}
        rows.append(((hour, team, "", client, "", "", "", tool_of(event)), calls))
    return rows


def new_task(event: Mapping[str, Any]) -> TaskState:
    user, task_id = task_key(event)  # type: ignore[misc]
    return TaskState(user_email=user, task_id=task_id, started_at=event["time"], last_at=event["time"])


def fold_lifecycle(task: TaskState, event: Mapping[str, Any]) -> None:
    """Times, dimensions and outcome. The latest completion, failure or resumption decides; an
    abandonment (an inference: idle, or cancelled) only closes an open task, and later activity
    opens it again."""
    time, kind = event["time"], event["kind"]
    task.started_at = min(task.started_at, time)
    task.last_at = max(task.last_at, time)
    attributes = event.get("attributes") or {}
    task.team = task.team or (event.get("team") or "")
    task.client = task.client or (event.get("client") or "")
    if event.get("mode") and (kind == "task.started" or not task.mode):
        task.mode = str(event["mode"])[:64]
    if kind == "task.started" and attributes.get("parent_task_id"):
        task.parent_task_id = str(attributes["parent_task_id"])[:200]
    if kind == "llm.request" and not task.model:
        task.provider, task.model = model_of(event)
    if kind in _STRONG:
        if task.outcome_at is None or time >= task.outcome_at:
            task.outcome, task.outcome_at = _STRONG[kind], time
    elif kind == "task.abandoned":
        if task.outcome is None and (task.outcome_at is None or time >= task.outcome_at):
            task.outcome, task.outcome_at = "abandoned", time
    elif task.outcome == "abandoned" and task.outcome_at is not None and time > task.outcome_at:
        task.outcome, task.outcome_at = None, time  # it went on after all


def fold_measures(task: TaskState, event: Mapping[str, Any], sign: int) -> None:
    if event["kind"] == "llm.request":
        task.requests += sign
        task.spend_usd += sign * (event.get("cost_usd") or 0.0)
    elif event["kind"] == "task.rolled_back":
        task.rollbacks += sign


@dataclass
class HourDeltas:
    """Sums to add to hour rows, by hour and dimensions."""

    rows: dict[tuple[Any, ...], dict[str, float]] = field(default_factory=dict)

    def add(self, event: Mapping[str, Any], task: TaskState | None, sign: int = 1) -> None:
        for key, measures in contributions(event, task):
            row = self.rows.setdefault(key, dict.fromkeys(MEASURES, 0))
            for name, value in measures.items():
                row[name] += sign * value


def abandoned_before(now: datetime, idle_s: float) -> datetime:
    """A task with no outcome and nothing since this time is counted as abandoned."""
    return now - timedelta(seconds=idle_s)
