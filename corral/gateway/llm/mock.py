"""The built-in `mock` provider: a model that answers at once (or after `latency_ms`), in either
dialect, streamed or not, deterministically, and fails on demand (`fail_status`, `fail_rate`).
The demo runs on it, and so do tests and runbook drills: no network, no key.

Its reply names what it was asked, so a person trying Corral sees the request went through:
`mock reply to: <the last user text>`.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from corral.gateway.llm.dialects import Dialect, error_body
from corral.policy.schema import MockBehaviour

_NO_FAULTS = MockBehaviour()


class MockModel:
    def __init__(self, behaviour: MockBehaviour | None) -> None:
        self.behaviour = behaviour or _NO_FAULTS
        self._calls = 0

    def _fails(self) -> bool:
        """Deterministic: with rate r, the n-th call fails when floor(n*r) moves."""
        self._calls += 1
        rate = self.behaviour.fail_rate
        return self.behaviour.fail_status is not None and int(self._calls * rate) != int((self._calls - 1) * rate)

    async def answer(self, dialect: Dialect, operation: str, model: str,
                     body: dict[str, Any]) -> tuple[int, bytes | AsyncIterator[bytes]]:
        """The status and the body: bytes, or the stream's chunks when the request streams."""
        if self.behaviour.latency_ms:
            await asyncio.sleep(self.behaviour.latency_ms / 1000)
        if self._fails():
            status = self.behaviour.fail_status or 500
            message = f"the mock provider was told to fail with {status}"
            return status, json.dumps(error_body(dialect, status, "mock_fault", message)).encode()
        text = f"mock reply to: {_last_user_text(body)[:200]}"
        tokens_in = max(1, len(json.dumps(body.get("messages") or body.get("input") or "")) // 4)
        tokens_out = max(1, len(text) // 4)
        if operation == "count_tokens":
            return 200, json.dumps({"input_tokens": tokens_in}).encode()
        if operation == "responses":
            response = _response(model, text, tokens_in, tokens_out)
            return 200, (_response_stream(response) if body.get("stream") else json.dumps(response).encode())
        if dialect == "anthropic":
            if body.get("stream"):
                return 200, _anthropic_stream(model, text, tokens_in, tokens_out)
            return 200, json.dumps(_anthropic_message(model, text, tokens_in, tokens_out)).encode()
        if body.get("stream"):
            return 200, _openai_stream(model, text, tokens_in, tokens_out,
                                       bool((body.get("stream_options") or {}).get("include_usage")))
        return 200, json.dumps(_openai_completion(model, text, tokens_in, tokens_out)).encode()


def _last_user_text(body: dict[str, Any]) -> str:
    given = body.get("input")
    if isinstance(given, str):
        return given
    for message in reversed(body.get("messages") or given or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def _openai_completion(model: str, text: str, tokens_in: int, tokens_out: int) -> dict[str, Any]:
    return {"id": f"chatcmpl-mock-{uuid.uuid4().hex[:12]}", "object": "chat.completion", "created": int(time.time()),
            "model": model, "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": tokens_in, "completion_tokens": tokens_out,
                      "total_tokens": tokens_in + tokens_out}}


async def _openai_stream(model: str, text: str, tokens_in: int, tokens_out: int,
                         include_usage: bool) -> AsyncIterator[bytes]:
    base = {"id": f"chatcmpl-mock-{uuid.uuid4().hex[:12]}", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": model}
    chunks = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}]
    chunks += [{**base, "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
               for word in _words(text)]
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if include_usage:
        chunks.append({**base, "choices": [], "usage": {"prompt_tokens": tokens_in, "completion_tokens": tokens_out,
                                                        "total_tokens": tokens_in + tokens_out}})
    for chunk in chunks:
        yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
    yield b"data: [DONE]\n\n"


def _anthropic_message(model: str, text: str, tokens_in: int, tokens_out: int) -> dict[str, Any]:
    return {"id": f"msg_mock_{uuid.uuid4().hex[:12]}", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": tokens_in, "output_tokens": tokens_out}}


async def _anthropic_stream(model: str, text: str, tokens_in: int, tokens_out: int) -> AsyncIterator[bytes]:
    message = {**_anthropic_message(model, "", tokens_in, 1), "content": [], "stop_reason": None}
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": message}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}})]
    events += [("content_block_delta", {"type": "content_block_delta", "index": 0,
                                        "delta": {"type": "text_delta", "text": word}}) for word in _words(text)]
    events += [("content_block_stop", {"type": "content_block_stop", "index": 0}),
               ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                  "usage": {"output_tokens": tokens_out}}),
               ("message_stop", {"type": "message_stop"})]
    for name, data in events:
        yield f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def _response(model: str, text: str, tokens_in: int, tokens_out: int) -> dict[str, Any]:
    return {"id": f"resp_mock_{uuid.uuid4().hex[:12]}", "object": "response", "created_at": int(time.time()),
            "status": "completed", "model": model,
            "output": [{"type": "message", "id": f"msg_mock_{uuid.uuid4().hex[:12]}", "status": "completed",
                        "role": "assistant", "content": [{"type": "output_text", "text": text, "annotations": []}]}],
            "usage": {"input_tokens": tokens_in, "output_tokens": tokens_out, "total_tokens": tokens_in + tokens_out}}


async def _response_stream(response: dict[str, Any]) -> AsyncIterator[bytes]:
    item = response["output"][0]
    text = item["content"][0]["text"]
    started = {**response, "status": "in_progress", "output": []}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": started},
        {"type": "response.output_item.added", "output_index": 0, "item": {**item, "status": "in_progress", "content": []}},
        {"type": "response.content_part.added", "item_id": item["id"], "output_index": 0, "content_index": 0,
         "part": {"type": "output_text", "text": "", "annotations": []}}]
    events += [{"type": "response.output_text.delta", "item_id": item["id"], "output_index": 0, "content_index": 0,
                "delta": word} for word in _words(text)]
    events += [{"type": "response.output_text.done", "item_id": item["id"], "output_index": 0, "content_index": 0,
                "text": text},
               {"type": "response.content_part.done", "item_id": item["id"], "output_index": 0, "content_index": 0,
                "part": item["content"][0]},
               {"type": "response.output_item.done", "output_index": 0, "item": item},
               {"type": "response.completed", "response": response}]
    for number, event in enumerate(events):
        yield f"event: {event['type']}\ndata: {json.dumps({**event, 'sequence_number': number})}\n\n".encode()


def _words(text: str) -> list[str]:
    words = text.split(" ")
    return [word + (" " if index < len(words) - 1 else "") for index, word in enumerate(words)]
