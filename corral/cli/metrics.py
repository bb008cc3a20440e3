"""`corral metrics`: the five high-value metrics of a window, with the samples behind each and the
previous window beside them, or broken down by team, user, mode, model, provider, client or tool."""

from __future__ import annotations

import time
from typing import Annotated, Any, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from corral.cli.common import JsonFlag, api, err, out, print_json

LABELS = {"task_success_rate": "task success rate", "rollback_frequency": "rollbacks per 100 tasks",
          "tool_error_rate": "command/tool error rate", "median_cycle_time_s": "median cycle time",
          "cost_per_completed_task_usd": "cost per completed task"}
VOLUMES = ("tasks", "completed", "failed", "abandoned", "rollbacks", "requests", "tool_calls", "commands", "spend_usd")


def show(name: str, value: float | None) -> str:
    """A metric's value as a person reads it."""
    if value is None:
        return "-"
    if name in ("task_success_rate", "tool_error_rate"):
        return f"{value * 100:.1f}%"
    if name == "median_cycle_time_s":
        minutes, seconds = divmod(round(value), 60)
        hours, minutes = divmod(minutes, 60)
        return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"
    if name in ("cost_per_completed_task_usd", "spend_usd"):
        return f"${value:,.2f}"
    if name == "rollback_frequency":
        return f"{value:.1f}"
    return f"{value:,}"


metrics_app = typer.Typer(help="The five high-value metrics.")


@metrics_app.callback(invoke_without_command=True)
def metrics(
    context: typer.Context,
    window: Annotated[Optional[str], typer.Option(help="How far back from now: 24h, 7d, 30d (default 7d).")] = None,
    since: Annotated[Optional[str], typer.Option(help="Start date or time (2026-11-19, 2026-11-19T08:00:00Z).")] = None,
    until: Annotated[Optional[str], typer.Option(help="End date or time (default now).")] = None,
    by: Annotated[Optional[str], typer.Option(help="Break down by team, user, mode, model, provider, client or tool.")] = None,
    team: Annotated[Optional[str], typer.Option(help="Only this team.")] = None,
    user: Annotated[Optional[str], typer.Option(help="Only this user.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """The five high-value metrics: task success rate, rollback frequency, command/tool error
    rate, median cycle time and cost per completed task, each with its sample count."""
    if context.invoked_subcommand is not None:
        return
    summary = api().call("GET", "/metrics/summary", params={"window": window, "since": since, "until": until,
                                                            "by": by, "team": team, "user": user})
    if as_json:
        print_json(summary)
        return
    span = summary["window"]
    scope = ", ".join(f"{name} {value}" for name, value in summary["scope"].items() if value) or "everyone"
    out.print(f"{span['start'][:16].replace('T', ' ')} to {span['end'][:16].replace('T', ' ')} UTC ({scope})")
    if by:
        out.print(_groups(summary, by))
    else:
        out.print(_overall(summary))
    volumes = summary["volumes"]
    out.print(" · ".join(f"{name.replace('_usd', '').replace('_', ' ')} {show(name, volumes[name])}" for name in VOLUMES))


@metrics_app.command("rebuild")
def rebuild() -> None:
    """Throw the rollups away and fold every event again (admins); shows the progress."""
    client = api()
    status = client.call("POST", "/metrics/rebuild")
    with Progress(TextColumn("folding events"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True) as progress:
        bar = progress.add_task("fold", total=max(status["newest"], 1))
        while status["rebuilding"]:
            time.sleep(0.5)
            status = client.call("GET", "/metrics/status")
            progress.update(bar, completed=status["folded"], total=max(status["newest"], 1))
    out.print(f"Rollups rebuilt: {status['folded']:,} of {status['newest']:,} events folded.")


def _overall(summary: dict[str, Any]) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("metric", "value", "samples", "previous", "prev. samples"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    previous = summary["previous"]["metrics"]
    for name, label in LABELS.items():
        now, before = summary["metrics"][name], previous[name]
        table.add_row(label, show(name, now["value"]), str(now["samples"]), show(name, before["value"]),
                      str(before["samples"]))
    return table


def _groups(summary: dict[str, Any], by: str) -> Table:
    """A row per group: each metric with its samples in brackets (by tool: its calls only)."""
    table = Table(box=None, header_style="bold", padding=(0, 1), pad_edge=False)
    table.add_column(by, overflow="fold")
    names = ["tool_error_rate"] if by == "tool" else list(LABELS)
    headers = {"task_success_rate": "success", "rollback_frequency": "rollbacks", "tool_error_rate": "errors",
               "median_cycle_time_s": "cycle", "cost_per_completed_task_usd": "cost/task"}
    for name in names:
        table.add_column(headers[name], justify="right", no_wrap=True)
    table.add_column("calls" if by == "tool" else "spend", justify="right", no_wrap=True)
    for group in summary["groups"]:
        found, volumes = group["metrics"], group["volumes"]
        cells = [f"{show(name, found[name]['value'])} ({found[name]['samples']})" for name in names]
        last = str(volumes["tool_calls"] + volumes["commands"]) if by == "tool" else show("spend_usd", volumes["spend_usd"])
        table.add_row(str(group["key"][by] or "(none)"), *cells, last)
    return table
