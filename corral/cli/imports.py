"""`corral import roo|cline PATH` and `corral ship --watch PATH` (being built)."""

from __future__ import annotations

import typer

import_app = typer.Typer(help="Import agents' task folders (Roo Code, Cline).", no_args_is_help=True)


def ship() -> None:
    """Ship new task-folder events to Corral continuously (being built)."""
    raise typer.Exit(2)
