"""The five high-value metrics, defined over volumes counted for one window (docs/metrics.md has
the definitions in words and their edge cases). Pure: a metric with no samples is None, never 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

METRICS = ("task_success_rate", "rollback_frequency", "tool_error_rate", "median_cycle_time_s",
           "cost_per_completed_task_usd")


@dataclass
class Volumes:
    """What happened in a window: tasks that ended in it (by outcome) and the rollbacks they
    had; model requests, calls and spend made in it."""

    tasks: int = 0  # completed + failed + abandoned
    completed: int = 0
    failed: int = 0
    abandoned: int = 0
    rollbacks: int = 0
    requests: int = 0
    request_errors: int = 0
    tool_calls: int = 0  # calls other than commands
    commands: int = 0
    call_errors: int = 0  # failed tool calls and commands (error or timeout)
    call_timeouts: int = 0
    command_errors: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    spend_usd: float = 0.0

    def add(self, other: "Volumes") -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["spend_usd"] = round(self.spend_usd, 6)
        return values


def _ratio(part: float, whole: float, scale: float = 1.0) -> float | None:
    return round(scale * part / whole, 6) if whole else None


def metrics_of(volumes: Volumes, median_cycle_s: float | None, cycle_samples: int) -> dict[str, dict[str, Any]]:
    """The five metrics, each with the number of samples behind it."""
    calls = volumes.tool_calls + volumes.commands
    return {
        "task_success_rate": {"value": _ratio(volumes.completed, volumes.tasks), "samples": volumes.tasks},
        "rollback_frequency": {"value": _ratio(volumes.rollbacks, volumes.tasks, 100.0), "samples": volumes.tasks},
        "tool_error_rate": {"value": _ratio(volumes.call_errors, calls), "samples": calls},
        "median_cycle_time_s": {"value": round(median_cycle_s, 3) if cycle_samples and median_cycle_s is not None
                                else None, "samples": cycle_samples},
        "cost_per_completed_task_usd": {"value": _ratio(volumes.spend_usd, volumes.completed),
                                        "samples": volumes.completed},
    }

