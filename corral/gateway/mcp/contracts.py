"""Tool contracts: what a tool was when it was pinned. A pin is the SHA-256 of the tool's name,
description, input schema and annotations. A server that later serves a pinned tool with any
of those changed has that tool quarantined (hidden and refused) until an admin pins it again,
so a server cannot silently turn a read tool into a write tool or poison a description.

Servers with `pinning: learn` have each tool pinned the first time it is seen (trust on first
use); with `pinning: manual`, a tool is served only once an admin has pinned it
(`corral mcp pin SERVER`).
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Any

import mcp_types as types
from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from corral.audit.records import payload_sha256
from corral.events.model import utcnow
from corral.store.tables import tool_pins

log = logging.getLogger("corral.mcp")
PINS_TTL_S = 5.0  # pins made on another replica are seen within this time


def annotations_of(tool: types.Tool) -> dict[str, Any] | None:
    """A tool's annotations as they are on the wire (`readOnlyHint`, ...)."""
    return tool.annotations.model_dump(by_alias=True, exclude_none=True) if tool.annotations else None


def definition(tool: types.Tool) -> dict[str, Any]:
    """The parts of a tool that make its contract, as plain JSON."""
    return {"name": tool.name, "description": tool.description, "inputSchema": tool.input_schema,
            "annotations": annotations_of(tool)}


def fingerprint(tool: types.Tool) -> str:
    return payload_sha256(definition(tool))


@dataclass(frozen=True)
class Judged:
    """A server's tools sorted by their contract: served, quarantined (changed since pinned) and
    unpinned (waiting for an admin's pin, on a `manual` server)."""

    served: list[types.Tool]
    quarantined: list[tuple[types.Tool, str]]  # (tool, the pinned hash)
    unpinned: list[types.Tool]
    learned: list[tuple[types.Tool, str]]  # newly seen on a `learn` server: to be pinned
    by_name: dict[str, types.Tool]  # the served ones


# MCP's tool names: 1-128 letters, digits, `_`, `-`, `.` and `/`. Anything else is not served
# (it could not be pinned, and it may be trying to look like another tool).
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_./-]{1,128}$")


def judge(tools: list[types.Tool], pins: dict[str, str], learn: bool) -> Judged:
    served, quarantined, unpinned, learned = [], [], [], []
    for tool in tools:
        if not _TOOL_NAME.match(tool.name):
            log.warning("not serving a tool whose name is not a valid MCP tool name: %r", tool.name[:200])
            continue
        digest = fingerprint(tool)
        pinned = pins.get(tool.name)
        if pinned is None:
            if learn:
                served.append(tool)
                learned.append((tool, digest))
            else:
                unpinned.append(tool)
        elif pinned == digest:
            served.append(tool)
        else:
            quarantined.append((tool, pinned))
    return Judged(served, quarantined, unpinned, learned, {tool.name: tool for tool in served})


class Pins:
    """Every server's pins, read from the database and kept for PINS_TTL_S."""

    def __init__(self) -> None:
        self._pins: dict[str, dict[str, str]] = {}
        self._read_at = -PINS_TTL_S
        self.generation = 0  # changes whenever pins may have changed

    def stale(self) -> bool:
        return time.monotonic() - self._read_at >= PINS_TTL_S

    def of(self, server: str) -> dict[str, str]:
        return self._pins.get(server, {})

    async def load(self, connection: AsyncConnection) -> None:
        pins: dict[str, dict[str, str]] = {}
        for server, tool, digest in (await connection.execute(
                select(tool_pins.c.server, tool_pins.c.tool, tool_pins.c.sha256))).all():
            pins.setdefault(server, {})[tool] = digest
        if pins != self._pins:
            self.generation += 1
        self._pins, self._read_at = pins, time.monotonic()

    def forget(self) -> None:
        self._read_at = -PINS_TTL_S
        self.generation += 1


async def pin(connection: AsyncConnection, server: str, tools: list[types.Tool], by: str,
              only_new: bool = False) -> list[str]:
    """Pin `tools` as they are now (replacing earlier pins unless `only_new`); return the names
    whose pin changed."""
    existing = {tool: digest for tool, digest in (await connection.execute(
        select(tool_pins.c.tool, tool_pins.c.sha256).where(tool_pins.c.server == server))).all()}
    changed = []
    now = utcnow()
    for tool in tools:
        digest = fingerprint(tool)
        if existing.get(tool.name) == digest or (only_new and tool.name in existing):
            continue
        if tool.name in existing:
            await connection.execute(delete(tool_pins).where(tool_pins.c.server == server,
                                                             tool_pins.c.tool == tool.name))
        await connection.execute(insert(tool_pins).values(server=server, tool=tool.name, sha256=digest,
                                                          definition=definition(tool), pinned_by=by, pinned_at=now))
        changed.append(tool.name)
    return changed


async def pinned_definitions(connection: AsyncConnection, server: str) -> dict[str, dict[str, Any]]:
    rows = (await connection.execute(select(tool_pins.c.tool, tool_pins.c.definition)
                                     .where(tool_pins.c.server == server))).all()
    return {tool: found for tool, found in rows}
