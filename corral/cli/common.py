"""What every CLI command shares: the API client, durations, and printing tables and JSON."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.console import Console
from rich.table import Table

from corral.cli.client import ApiClient, CliError
from corral.settings import load_client_settings

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
DURATION = re.compile(r"^(\d+)([smhdw])$")
_ISO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta:
    """`90m`, `12h`, `30d`, `2w` -> timedelta."""
    match = DURATION.match(text.strip().lower())
    if not match:
        raise CliError(f"{text!r} is not a duration; use a number and a unit: 90m, 12h, 30d, 2w")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def segment(text: str) -> str:
    """User input as one URL path segment."""
    return quote(text, safe="@")


def api() -> ApiClient:
    return ApiClient(load_client_settings())


def print_json(value: Any) -> None:
    out.print_json(json.dumps(value), highlight=False)


def print_table(rows: list[dict[str, Any]], columns: list[str], empty: str) -> None:
    if not rows:
        err.print(empty)
        return
    table = Table(box=None, header_style="bold")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(cell(row.get(column)) for column in columns))
    out.print(table)


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(item) for item in value) or "-"
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":")) if value else "-"
    if isinstance(value, str) and _ISO_TIME.match(value):
        return value[:19].replace("T", " ")  # listings show UTC to the second
    return str(value)
