"""Prometheus exposition: counters and histograms of what this replica's gateways recorded
(Prometheus adds the replicas up), and gauges of the five metrics over the last 24 hours from
the rollups (the same for every replica). Labels come from bounded sets only (teams, clients,
providers and models named in the policy, outcomes); never a user, a key or a task.

The text format is small enough to write here; `promtool check metrics` checks it in the tests."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from corral.events.model import Event

DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_CLIENTS = ("roo-code", "cline", "claude-code", "kilo-code", "codex", "cursor")
_OUTCOMES = ("ok", "error", "timeout", "cancelled", "denied", "abandoned", "requested", "unavailable")
_TASK_KINDS = {"task.started": "started", "task.completed": "completed", "task.failed": "failed",
               "task.abandoned": "abandoned", "task.rolled_back": "rolled_back"}
MAX_SERIES = 5000  # per metric: a bound on memory whatever the traffic
GAUGES = {
    "task_success_rate": ("corral_task_success_ratio", "Completed tasks / tasks that ended, last 24 hours."),
    "rollback_frequency": ("corral_rollbacks_per_100_tasks", "Rollbacks per 100 tasks that ended, last 24 hours."),
    "tool_error_rate": ("corral_tool_error_ratio", "Failed tool calls and commands / all, last 24 hours."),
    "median_cycle_time_s": ("corral_task_cycle_median_seconds", "Median start-to-completion time, last 24 hours."),
    "cost_per_completed_task_usd": ("corral_cost_per_completed_task_usd", "Spend / completed tasks, last 24 hours."),
}


def _client(name: str | None) -> str:
    return name if name in _CLIENTS else "other"


def _outcome(name: str | None) -> str:
    return name if name in _OUTCOMES else ("none" if name is None else "other")


class Histogram:
    def __init__(self) -> None:
        self.buckets = [0] * len(DURATION_BUCKETS)
        self.count = 0
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.count += 1
        self.sum += seconds
        for index, bound in enumerate(DURATION_BUCKETS):
            if seconds <= bound:
                self.buckets[index] += 1


class GatewayCounters:
    """Counts what the event recorder sees; `observe` is called for every event it records."""

    def __init__(self) -> None:
        self.counters: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(lambda: defaultdict(float))
        self.histograms: dict[str, dict[tuple[tuple[str, str], ...], Histogram]] = defaultdict(dict)

    def _add(self, name: str, labels: dict[str, str], amount: float = 1.0) -> None:
        series = self.counters[name]
        key = tuple(sorted(labels.items()))
        if key in series or len(series) < MAX_SERIES:
            series[key] += amount

    def _time(self, name: str, labels: dict[str, str], milliseconds: float | None) -> None:
        if milliseconds is None or not math.isfinite(milliseconds):
            return
        series = self.histograms[name]
        key = tuple(sorted(labels.items()))
        if key not in series and len(series) >= MAX_SERIES:
            return
        series.setdefault(key, Histogram()).observe(max(milliseconds, 0.0) / 1000)

    def observe(self, event: Event) -> None:
        team, client, outcome = event.team or "", _client(event.client), _outcome(event.outcome)
        attributes = event.attributes
        if event.kind == "llm.request":
            provider, model = str(attributes.get("provider") or ""), str(attributes.get("model") or "")
            labels = {"team": team, "client": client, "provider": provider, "model": model}
            self._add("corral_llm_requests_total", {**labels, "outcome": outcome})
            self._add("corral_llm_spend_usd_total", labels, event.cost_usd or 0.0)
            self._add("corral_llm_tokens_total", {**labels, "direction": "in"}, event.tokens_in or 0)
            self._add("corral_llm_tokens_total", {**labels, "direction": "out"}, event.tokens_out or 0)
            self._time("corral_llm_request_duration_seconds", {"provider": provider}, event.duration_ms)
        elif event.kind == "tool.call" and event.source == "hooks":
            self._add("corral_hook_decisions_total", {"team": team, "client": client,
                                                      "decision": event.decision or ""})
        elif (event.kind == "command.exec" or event.kind == "tool.result") and event.source is None:
            kind = "command" if event.kind == "command.exec" else "tool"
            self._add("corral_tool_calls_total", {"team": team, "client": client, "kind": kind, "outcome": outcome})
        elif event.kind == "tool.call" and event.source is None and "server" in attributes:
            server = str(attributes.get("server"))
            self._add("corral_mcp_calls_total", {"team": team, "server": server, "outcome": outcome})
            self._time("corral_mcp_call_duration_seconds", {"server": server}, event.duration_ms)
        elif event.kind in _TASK_KINDS:
            self._add("corral_tasks_total", {"team": team, "client": client, "event": _TASK_KINDS[event.kind]})
        elif event.kind == "auth.failed":
            self._add("corral_auth_failures_total", {})


_HELP = {
    "corral_llm_requests_total": "Model requests through this replica's LLM gateway.",
    "corral_llm_spend_usd_total": "Priced spend of model requests through this replica, in USD.",
    "corral_llm_tokens_total": "Tokens of model requests through this replica.",
    "corral_llm_request_duration_seconds": "Model request duration through this replica, first byte to last.",
    "corral_tool_calls_total": "Tool calls and commands whose result this replica's LLM gateway saw.",
    "corral_mcp_calls_total": "MCP tool calls through this replica's MCP gateway.",
    "corral_mcp_call_duration_seconds": "MCP tool call duration through this replica.",
    "corral_hook_decisions_total": "Tool uses agents' hooks asked this replica about, by the policy's decision.",
    "corral_tasks_total": "Task lifecycle events this replica's gateways and hooks recorded.",
    "corral_auth_failures_total": "Requests refused for missing, wrong, expired or revoked credentials.",
}


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    text = ",".join(f'{name}="{_escape(value)}"' for name, value in pairs)
    return "{" + text + "}" if text else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def render(counters: GatewayCounters, gauges: dict[str, list[tuple[dict[str, str], float | None]]],
           process: dict[str, tuple[str, str, float]]) -> str:
    """The exposition text: gateway counters and histograms, metric gauges, process figures
    ({name: (type, help, value)})."""
    lines: list[str] = []
    for name in _HELP:
        if name in counters.counters:
            lines += [f"# HELP {name} {_HELP[name]}", f"# TYPE {name} counter"]
            lines += [f"{name}{_labels(key)} {_number(value)}" for key, value in sorted(counters.counters[name].items())]
        elif name in counters.histograms:
            lines += [f"# HELP {name} {_HELP[name]}", f"# TYPE {name} histogram"]
            for key, histogram in sorted(counters.histograms[name].items()):
                for bound, count in zip(DURATION_BUCKETS, histogram.buckets):
                    lines.append(f"{name}_bucket{_labels((*key, ('le', _number(bound))))} {count}")
                lines.append(f"{name}_bucket{_labels((*key, ('le', '+Inf')))} {histogram.count}")
                lines.append(f"{name}_sum{_labels(key)} {_number(histogram.sum)}")
                lines.append(f"{name}_count{_labels(key)} {histogram.count}")
    for metric, (name, help_text) in GAUGES.items():
        points = [(labels, value) for labels, value in gauges.get(metric, []) if value is not None]
        if points:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
            lines += [f"{name}{_labels(sorted(labels.items()))} {_number(value)}" for labels, value in points]
    for name, (kind, help_text, value) in process.items():
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {_number(value)}"]
    return "\n".join(lines) + "\n"


def gauges_of(summary: dict[str, Any]) -> dict[str, list[tuple[dict[str, str], float | None]]]:
    """The five metrics of a summary (overall and by team) as gauge points."""
    gauges: dict[str, list[tuple[dict[str, str], float | None]]] = {}
    for metric in GAUGES:
        gauges[metric] = [({}, summary["metrics"][metric]["value"])]
        for group in summary.get("groups", []):
            team = group["key"].get("team")
            if team:
                gauges[metric].append(({"team": team}, group["metrics"][metric]["value"]))
    return gauges
