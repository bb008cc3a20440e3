"""The two wire dialects agents speak to their models, OpenAI's and Anthropic's: their error
bodies, where each keeps the model, the token cap and the usage, and how usage and tool calls are
read from a response or from a stream as it passes. Pure: no I/O.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

Dialect = Literal["openai", "anthropic"]

# Which dialect each kind of provider speaks (the mock speaks both).
SPOKEN = {"openai": ("openai",), "anthropic": ("anthropic",), "mock": ("openai", "anthropic")}

_OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                 404: "invalid_request_error", 405: "invalid_request_error", 413: "invalid_request_error",
                 429: "rate_limit_error"}
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                    404: "not_found_error", 405: "invalid_request_error", 413: "request_too_large", 429: "rate_limit_error",
                    503: "overloaded_error", 529: "overloaded_error"}


def error_body(dialect: Dialect, status: int, code: str, message: str) -> dict[str, Any]:
    """An error as the real API would send it, so SDKs raise their own typed errors."""
    if dialect == "anthropic":
        return {"type": "error", "error": {"type": _ANTHROPIC_TYPES.get(status, "api_error"), "message": message}}
    return {"error": {"message": message, "type": _OPENAI_TYPES.get(status, "api_error"), "param": None,
                      "code": code}}


@dataclass
class Usage:
    input_tokens: int | None = None  # all input tokens, cached ones included
    output_tokens: int | None = None
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


@dataclass
class Observed:
    """What Corral reads from a response as it passes: usage, the tool calls the model made,
    why it stopped, and when the first token came."""

    usage: Usage = field(default_factory=Usage)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # {"id", "name", "arguments"}
    stop_reason: str | None = None


def arguments_of(value: Any) -> dict[str, Any]:
    """A tool call's arguments as a dict: given as one, or as JSON text (anything else: none)."""
    if isinstance(value, dict):
        return value
    if not isinstance(value, str):
        return {}
    try:
        parsed = json.loads(value)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _count(value: Any) -> int | None:
    """A token count as an upstream reported it: a non-negative whole number, or unknown."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = int(value)
    except ValueError:
        return None
    return number if number >= 0 else None


def read_openai(body: dict[str, Any], seen: Observed) -> None:
    """A chat completion (whole) or one chunk of a streamed one."""
    usage = body.get("usage")
    if isinstance(usage, dict):
        details = usage.get("prompt_tokens_details") if isinstance(usage.get("prompt_tokens_details"), dict) else {}
        seen.usage = Usage(_count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens")),
                           _count(details.get("cached_tokens")) or 0)
    for choice in body.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        if choice.get("finish_reason"):
            seen.stop_reason = choice["finish_reason"]
        message = choice.get("message") or choice.get("delta")
        calls = message.get("tool_calls") if isinstance(message, dict) else None
        for call in calls if isinstance(calls, list) else ():
            if isinstance(call, dict):
                _openai_tool_call(call, seen.tool_calls)


def _openai_tool_call(call: dict[str, Any], calls: list[dict[str, Any]]) -> None:
    """Whole calls arrive at once; streamed ones in pieces keyed by `index`."""
    function = call.get("function") if isinstance(call.get("function"), dict) else {}
    index = call.get("index")
    if isinstance(index, int) and 0 <= index < len(calls) and not call.get("id"):
        calls[index]["arguments"] += function.get("arguments") or ""
        return
    calls.append({"id": call.get("id"), "name": function.get("name"), "arguments": function.get("arguments") or ""})


def read_anthropic(body: dict[str, Any], seen: Observed) -> None:
    """A message (whole) or one event of a streamed one."""
    kind = body.get("type")
    if kind == "message_start":
        body = body.get("message") or {}
        kind = "message"
    if kind == "message":
        _anthropic_usage(body.get("usage"), seen)
        seen.stop_reason = body.get("stop_reason") or seen.stop_reason
        for block in body.get("content") or ():
            if isinstance(block, dict) and block.get("type") == "tool_use":
                seen.tool_calls.append({"id": block.get("id"), "name": block.get("name"),
                                        "arguments": json.dumps(block.get("input") or {})})
    elif kind == "content_block_start":
        block = body.get("content_block") or {}
        if block.get("type") == "tool_use":
            seen.tool_calls.append({"id": block.get("id"), "name": block.get("name"), "arguments": ""})
    elif kind == "content_block_delta":
        delta = body.get("delta") or {}
        if delta.get("type") == "input_json_delta" and seen.tool_calls:
            seen.tool_calls[-1]["arguments"] += delta.get("partial_json") or ""
    elif kind == "message_delta":
        _anthropic_usage(body.get("usage"), seen)
        seen.stop_reason = (body.get("delta") or {}).get("stop_reason") or seen.stop_reason


def _anthropic_usage(usage: Any, seen: Observed) -> None:
    if not isinstance(usage, dict):
        return
    current = seen.usage
    read = _count(usage.get("cache_read_input_tokens"))
    written = _count(usage.get("cache_creation_input_tokens"))
    fresh = _count(usage.get("input_tokens"))
    current.cache_read_tokens = read if read is not None else current.cache_read_tokens
    current.cache_write_tokens = written if written is not None else current.cache_write_tokens
    if fresh is not None:  # Anthropic counts cached input apart; Corral counts all input
        current.input_tokens = fresh + current.cache_read_tokens + current.cache_write_tokens
    if _count(usage.get("output_tokens")) is not None:
        current.output_tokens = _count(usage["output_tokens"])


def read_responses(body: dict[str, Any], seen: Observed) -> None:
    """A response of OpenAI's Responses API (whole), or the event that ends a streamed one
    (`response.completed` and its kin carry the whole response: read only those)."""
    if body.get("type") in ("response.completed", "response.incomplete", "response.failed"):
        body = body.get("response") or {}
    if body.get("object") != "response":
        return
    usage = body.get("usage")
    if isinstance(usage, dict):
        details = usage.get("input_tokens_details") if isinstance(usage.get("input_tokens_details"), dict) else {}
        seen.usage = Usage(_count(usage.get("input_tokens")), _count(usage.get("output_tokens")),
                           _count(details.get("cached_tokens")) or 0)
    seen.stop_reason = body.get("status") or seen.stop_reason
    for item in body.get("output") or ():
        if isinstance(item, dict) and item.get("type") == "function_call":
            seen.tool_calls.append({"id": item.get("call_id"), "name": item.get("name"),
                                    "arguments": item.get("arguments") or ""})


READERS = {"openai": read_openai, "anthropic": read_anthropic, "responses": read_responses}


def reader_for(dialect: Dialect, operation: str):  # noqa: ANN201 - a reader that never raises
    read = READERS["responses" if operation == "responses" else dialect]

    def safely(body: Any, seen: Observed) -> None:
        """Usage and tool calls are read where the answer has the usual shape; an odd one costs
        only what it would have told (the gate, not this, decides what passes)."""
        if isinstance(body, dict):
            try:
                read(body, seen)
            except (TypeError, AttributeError, ValueError, KeyError):
                pass

    return safely


class StreamReader:
    """Splits a stream of server-sent events into whole events as its bytes arrive (a partial
    event waits for the rest), and reads the ones that matter into `Observed` without holding
    the stream. Text deltas are not parsed at all."""

    _MATTERS = re.compile(rb'"usage"|"tool_calls"|"tool_use"|input_json_delta|"finish_reason": ?"|message_delta'
                          rb'|message_start|response\.(?:completed|incomplete|failed)')

    def __init__(self, dialect: Dialect, seen: Observed, operation: str = "chat") -> None:
        self._read = reader_for(dialect, operation)
        self._seen = seen
        self._pending = b""

    def split(self, chunk: bytes) -> list[bytes]:
        """The events this chunk completes, each with its blank-line end."""
        *events, self._pending = (self._pending + chunk).replace(b"\r\n", b"\n").split(b"\n\n")
        return [event + b"\n\n" for event in events]

    def rest(self) -> bytes:
        """What is left when the stream ends (an event without its blank line)."""
        rest, self._pending = self._pending, b""
        return rest

    def observe(self, event: bytes) -> None:
        if self._MATTERS.search(event):
            body = event_data(event)
            if body is not None:
                self._read(body, self._seen)


def event_data(event: bytes) -> dict[str, Any] | None:
    """The JSON object a server-sent event carries, or None (no data, `[DONE]`, not JSON: not
    ours to judge, the client gets the bytes as they came)."""
    payload = b"\n".join(line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:"))
    if not payload or payload == b"[DONE]":
        return None
    try:
        data = json.loads(payload)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
