"""The real MCP servers behind the gateway: one `Upstream` per `mcp_servers` entry, connected
with the official SDK's client over stdio (Corral spawns the process), Streamable HTTP or SSE.

A connection lives in a task of its own (the SDK's client must be entered and left in the same
task) and is shared by every caller; calls are multiplexed over it. A connection that breaks (a
crashed process, a closed stream) is dropped and made again on the next use, at once the first
time and then no sooner than its back-off allows, and the number of stdio processes Corral runs
at once is bounded. Every wait has a bound: connecting by the server's `connect_timeout_s`, each
request (a whole paged listing included) by its `timeout_s`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import mcp_types as types
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from corral.policy.schema import McpServer

log = logging.getLogger("corral.mcp")
BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)  # between attempts to connect after failures
MAX_PAGES = 100  # a server that pages forever is cut off
T = TypeVar("T")


class UpstreamError(Exception):
    """A request that did not get an answer from the server, with its category (`timeout`,
    `upstream_error`, `protocol_error`, `unavailable`) and a message a person can act on."""

    def __init__(self, category: str, message: str) -> None:
        super().__init__(message)
        self.category = category
        self.message = message


class StdioSlots:
    """The bound on how many stdio servers Corral runs at once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0


def resolve_secrets(values: dict[str, str], what: str) -> dict[str, str]:
    """`env:NAME` values read from this server's environment; a missing one is named, never guessed."""
    resolved = {}
    for name, value in values.items():
        if value.startswith("env:"):
            variable = value[4:]
            found = os.environ.get(variable)
            if found is None:
                raise UpstreamError("unavailable", f"{what} {name} needs the environment variable {variable}, "
                                                   "which is not set on this Corral server")
            value = found
        resolved[name] = value
    return resolved


class Upstream:
    def __init__(self, name: str, config: McpServer, slots: StdioSlots, tools_ttl_s: float = 10.0) -> None:
        self.name = name
        self._tools_ttl = tools_ttl_s  # how long the tool list is reused before it is fetched again
        self.config = config
        self._slots = slots
        self._client: Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[Client] | None = None
        self._closing = asyncio.Event()
        self._closed = False
        self._failures = 0  # attempts to connect that failed in a row
        self._next_attempt = 0.0
        self._tools: list[types.Tool] | None = None
        self._tools_at = 0.0
        self._listing: asyncio.Task[list[types.Tool]] | None = None
        self.protocol_version: str | None = None
        self.last_error: str | None = None

    @property
    def transport(self) -> str:
        return "stdio" if self.config.command is not None else self.config.transport

    # ---- the connection ------------------------------------------------------------------

    async def client(self) -> Client:
        """The connected client, connecting first if needed (single-flight)."""
        if self._client is not None:
            return self._client
        if self._closed:
            raise UpstreamError("unavailable", f"MCP server {self.name} was removed or reconfigured; call again")
        if self._ready is None:
            wait = self._next_attempt - time.monotonic()
            if wait > 0:
                raise UpstreamError("unavailable", f"MCP server {self.name} is reconnecting after failures "
                                                   f"({self.last_error}); next attempt in {wait:.0f} s")
            self._ready = asyncio.get_running_loop().create_future()
            self._closing = asyncio.Event()
            self._task = asyncio.create_task(self._run(self._ready, self._closing), name=f"corral-mcp-{self.name}")
        ready = self._ready
        try:
            async with asyncio.timeout(self.config.connect_timeout_s):
                return await asyncio.shield(ready)
        except TimeoutError:
            self.last_error = "it did not complete the MCP handshake in time"
            self._drop()
            raise UpstreamError("timeout", f"MCP server {self.name} did not answer the handshake within "
                                           f"{self.config.connect_timeout_s:g} s") from None

    async def _run(self, ready: asyncio.Future[Client], closing: asyncio.Event) -> None:
        stdio = self.config.command is not None
        if stdio and self._slots.used >= self._slots.limit:
            self._settle(ready, f"Corral already runs {self._slots.limit} stdio MCP servers (CORRAL_MCP_MAX_STDIO)")
            return
        self._slots.used += stdio
        client: Client | None = None
        try:
            async with self._connect() as client:
                self._client = client
                self.protocol_version = client.protocol_version
                self._failures = 0
                ready.set_result(client)
                await closing.wait()
        except (Exception, asyncio.CancelledError) as error:  # a crash, a refused connection, a bad handshake
            dropped = closing.is_set() and self.last_error  # dropped on purpose: its reason is known
            self._settle(ready, self.last_error if dropped else _describe(error))
            if isinstance(error, asyncio.CancelledError) and not closing.is_set():
                raise
        finally:
            self._slots.used -= stdio
            if self._client is client:  # not a newer connection made meanwhile
                self._client = None
            if self._ready is ready:  # the next caller connects afresh
                self._ready = None

    def _settle(self, ready: asyncio.Future[Client], why: str) -> None:
        """An attempt that ended: count it if it never connected, and tell whoever waits."""
        self.last_error = why
        if not ready.done():
            self._failures += 1
            self._next_attempt = time.monotonic() + BACKOFF_S[min(self._failures, len(BACKOFF_S)) - 1]
            ready.set_exception(UpstreamError("unavailable", f"MCP server {self.name} cannot be reached: {why}"))
            ready.exception()  # retrieved: each waiter raises its own error
            log.warning("MCP server %s: %s", self.name, why)

    @asynccontextmanager
    async def _connect(self) -> AsyncIterator[Client]:
        config = self.config
        if config.command is not None:
            env = resolve_secrets(config.env, "its env")
            server = StdioServerParameters(command=config.command, args=list(config.args), env=env, cwd=config.cwd)
            async with Client(server, read_timeout_seconds=config.timeout_s, cache=None) as client:
                yield client
            return
        headers = resolve_secrets(config.headers, "its header")
        assert config.url is not None
        if config.transport == "sse":
            transport = sse_client(config.url, headers=headers, timeout=config.connect_timeout_s)
            async with Client(transport, read_timeout_seconds=config.timeout_s, cache=None) as client:
                yield client
            return
        async with create_mcp_http_client(headers=headers) as http:  # closed with the connection
            transport = streamable_http_client(config.url, http_client=http)
            async with Client(transport, read_timeout_seconds=config.timeout_s, cache=None) as client:
                yield client

    def _drop(self, client: Client | None = None) -> None:
        """Drop the connection (`client`'s, if given and still the current one); the next use
        connects again."""
        if client is not None and client is not self._client:
            return  # a late error from a connection already replaced
        self._client = None
        self._tools = None
        self._ready = None
        self._closing.set()
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def close(self) -> None:
        self._closed = True
        self._drop()
        task, self._task = self._task, None
        if task is not None:
            await asyncio.wait({task}, timeout=5)

    # ---- requests ------------------------------------------------------------------------

    async def request(self, what: str, send: Callable[[Client], Awaitable[T]], timeout: float | None = None) -> T:
        """Send one request over the connection, within the server's timeout; every way it can
        fail becomes an UpstreamError with its category."""
        timeout = timeout or self.config.timeout_s
        client = await self.client()
        try:
            async with asyncio.timeout(timeout):
                return await send(client)
        except TimeoutError:
            raise UpstreamError("timeout", f"MCP server {self.name} did not answer {what} within {timeout:g} s") from None
        except MCPError as error:
            if error.code == types.CONNECTION_CLOSED:
                self.last_error = f"the connection closed during {what}"
                self._drop(client)
                raise UpstreamError("unavailable", f"MCP server {self.name} closed the connection during {what}; "
                                                   "it is started again on the next call") from None
            raise UpstreamError("upstream_error", f"MCP server {self.name} answered {what} with an error: "
                                                  f"{error.message}") from None
        except (ValueError, RuntimeError, TypeError) as error:  # pydantic's ValidationError is a ValueError
            raise UpstreamError("protocol_error", f"MCP server {self.name} answered {what} with an invalid "
                                                  f"result: {_short(error)}") from None
        except Exception as error:  # the transport broke (a dead process, a reset connection)
            self.last_error = _describe(error)
            self._drop(client)
            raise UpstreamError("unavailable", f"MCP server {self.name} failed during {what}: {self.last_error}") from None

    async def tools(self, refresh: bool = False) -> list[types.Tool]:
        """The server's tools, every page, fetched again after a while (single-flight)."""
        if self._tools is not None and not refresh and time.monotonic() - self._tools_at < self._tools_ttl:
            return self._tools
        if self._listing is None or self._listing.done():
            self._listing = asyncio.create_task(self._list_tools())
        return await asyncio.shield(self._listing)

    async def _list_tools(self) -> list[types.Tool]:
        async def every_page(client: Client) -> list[types.Tool]:
            tools: list[types.Tool] = []
            cursor: str | None = None
            seen: set[str] = set()
            for _ in range(MAX_PAGES):
                page = await client.list_tools(cursor=cursor)
                tools.extend(page.tools)
                cursor = page.next_cursor
                if not cursor or cursor in seen:
                    break
                seen.add(cursor)
            return tools

        tools = await self.request("tools/list", every_page)  # one deadline for every page
        self._tools, self._tools_at = tools, time.monotonic()
        return tools

    async def call_tool(self, tool: str, arguments: dict[str, Any] | None) -> types.CallToolResult:
        return await self.request(f"tools/call {tool}", lambda c: c.session.call_tool(tool, arguments))


def _describe(error: BaseException) -> str:
    if isinstance(error, BaseExceptionGroup):
        return "; ".join(_describe(inner) for inner in error.exceptions[:3])
    if isinstance(error, FileNotFoundError):
        return f"its command was not found ({error.filename or error})"
    if isinstance(error, MCPError):
        return error.message
    if isinstance(error, asyncio.CancelledError):
        return "the connection was closed"
    return _short(error)


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:300]}" if text else type(error).__name__
