"""A local model server that speaks OpenAI's and Anthropic's wire formats, as the cloud APIs
do, for Corral to route to. One app serves many named providers under path prefixes
(`/<name>/v1/chat/completions`, `/<name>/v1/messages`); a test queues what each answers next
(a reply, a tool call, an error status, an HTML page, a hang, a stream cut in the middle) and
reads back what each received. Written from the APIs' documentation, apart from Corral's mock."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.conftest import free_port

USAGE_IN, USAGE_OUT, CACHED = 11, 7, 3  # what every OpenAI-format answer reports


@dataclass
class Behaviour:
    kind: str = "reply"  # reply | tool | status | html | hang | cut | slow_stream | raw (body: the bytes to send)
    text: str = "hello from upstream"
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    tool: tuple[str, dict[str, Any]] | None = None  # (name, arguments)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class Upstream:
    def __init__(self) -> None:
        self.queued: dict[str, deque[Behaviour]] = defaultdict(deque)
        self.received: dict[str, list[Received]] = defaultdict(list)
        self.disconnected: list[str] = []
        self.port = free_port()
        self.app = Starlette(routes=[Route("/{name}/v1/chat/completions", self._openai, methods=["POST"]),
                                     Route("/{name}/v1/responses", self._responses, methods=["POST"]),
                                     Route("/{name}/v1/messages", self._anthropic, methods=["POST"])])
        self._server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="error"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def base(self, name: str, with_v1: bool = True) -> str:
        return f"http://127.0.0.1:{self.port}/{name}" + ("/v1" if with_v1 else "")

    def start(self) -> "Upstream":
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the local upstream did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def then(self, name: str, *behaviours: Behaviour) -> None:
        self.queued[name].extend(behaviours)

    def _next(self, name: str) -> Behaviour:
        return self.queued[name].popleft() if self.queued[name] else Behaviour()

    async def _take(self, request: Request) -> tuple[str, Behaviour, dict[str, Any]]:
        name = request.path_params["name"]
        body = await request.json()
        self.received[name].append(Received(request.url.path, dict(request.headers), body))
        return name, self._next(name), body

    async def _common(self, behaviour: Behaviour) -> Response | None:
        if behaviour.kind == "status":
            return Response(json.dumps(behaviour.body).encode() if behaviour.body is not None else b"",
                            status_code=behaviour.status, headers=behaviour.headers, media_type="application/json")
        if behaviour.kind == "html":
            return Response("<html><body><h1>502 Bad Gateway</h1></body></html>", status_code=behaviour.status,
                            media_type="text/html")
        if behaviour.kind == "hang":
            await asyncio.sleep(30)
        if behaviour.kind == "raw":
            return Response(behaviour.body, media_type="text/event-stream")
        return None

    # ---- OpenAI chat completions -------------------------------------------------------------

    async def _openai(self, request: Request) -> Response:
        name, behaviour, body = await self._take(request)
        early = await self._common(behaviour)
        if early is not None:
            return early
        model = body["model"]
        message: dict[str, Any] = {"role": "assistant", "content": behaviour.text}
        finish = "stop"
        if behaviour.tool:
            tool_name, arguments = behaviour.tool
            message = {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_up_1", "type": "function",
                 "function": {"name": tool_name, "arguments": json.dumps(arguments)}}]}
            finish = "tool_calls"
        usage = {"prompt_tokens": USAGE_IN, "completion_tokens": USAGE_OUT, "total_tokens": USAGE_IN + USAGE_OUT,
                 "prompt_tokens_details": {"cached_tokens": CACHED}}
        if not body.get("stream"):
            return JSONResponse({"id": "chatcmpl-up", "object": "chat.completion", "created": 1700000000,
                                 "model": model, "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                                 "usage": usage})
        include_usage = (body.get("stream_options") or {}).get("include_usage")
        return StreamingResponse(self._openai_chunks(name, behaviour, model, message, finish,
                                                     usage if include_usage else None),
                                 media_type="text/event-stream")

    async def _openai_chunks(self, name: str, behaviour: Behaviour, model: str, message: dict[str, Any],
                             finish: str, usage: dict[str, Any] | None):
        base = {"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1700000000, "model": model}

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            data = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
            return f"data: {json.dumps(data)}\n\n".encode()

        try:
            yield chunk({"role": "assistant", "content": ""})
            if message.get("tool_calls"):
                call = message["tool_calls"][0]
                arguments = call["function"]["arguments"]
                yield chunk({"tool_calls": [{"index": 0, "id": call["id"], "type": "function",
                                             "function": {"name": call["function"]["name"], "arguments": ""}}]})
                for start in range(0, len(arguments), 5):
                    yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": arguments[start:start + 5]}}]})
            else:
                for word in behaviour.text.split(" "):
                    if behaviour.kind == "slow_stream":
                        await asyncio.sleep(0.2)
                    yield chunk({"content": word + " "})
                    if behaviour.kind == "cut":
                        raise ConnectionAbortedError("cut on purpose")
            yield chunk({}, finish)
            if usage:
                yield f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n".encode()
            yield b"data: [DONE]\n\n"
        except asyncio.CancelledError:
            self.disconnected.append(name)
            raise

    # ---- OpenAI Responses API -----------------------------------------------------------------

    async def _responses(self, request: Request) -> Response:
        _, behaviour, body = await self._take(request)
        early = await self._common(behaviour)
        if early is not None:
            return early
        if behaviour.tool:
            tool_name, arguments = behaviour.tool
            item = {"type": "function_call", "id": "fc_up_1", "call_id": "call_up_1", "name": tool_name,
                    "arguments": json.dumps(arguments), "status": "completed"}
        else:
            item = {"type": "message", "id": "msg_up_1", "status": "completed", "role": "assistant",
                    "content": [{"type": "output_text", "text": behaviour.text, "annotations": []}]}
        response = {"id": "resp_up", "object": "response", "created_at": 1700000000, "status": "completed",
                    "model": body["model"], "output": [item],
                    "usage": {"input_tokens": USAGE_IN, "output_tokens": USAGE_OUT, "total_tokens": USAGE_IN + USAGE_OUT,
                              "input_tokens_details": {"cached_tokens": CACHED},
                              "output_tokens_details": {"reasoning_tokens": 0}}}
        if not body.get("stream"):
            return JSONResponse(response)
        return StreamingResponse(self._response_events(response, item), media_type="text/event-stream")

    async def _response_events(self, response: dict[str, Any], item: dict[str, Any]):
        events = [{"type": "response.created", "response": {**response, "status": "in_progress", "output": []}}]
        if item["type"] == "function_call":
            events += [{"type": "response.output_item.added", "output_index": 0, "item": {**item, "arguments": ""}},
                       {"type": "response.function_call_arguments.delta", "item_id": item["id"], "output_index": 0,
                        "delta": item["arguments"]},
                       {"type": "response.function_call_arguments.done", "item_id": item["id"], "output_index": 0,
                        "arguments": item["arguments"]}]
        else:
            text = item["content"][0]["text"]
            events += [{"type": "response.output_item.added", "output_index": 0, "item": {**item, "content": []}},
                       {"type": "response.output_text.delta", "item_id": item["id"], "output_index": 0,
                        "content_index": 0, "delta": text}]
        events += [{"type": "response.output_item.done", "output_index": 0, "item": item},
                   {"type": "response.completed", "response": response}]
        for number, event in enumerate(events):
            yield f"event: {event['type']}\ndata: {json.dumps({**event, 'sequence_number': number})}\n\n".encode()

    # ---- Anthropic messages ------------------------------------------------------------------

    async def _anthropic(self, request: Request) -> Response:
        name, behaviour, body = await self._take(request)
        early = await self._common(behaviour)
        if early is not None:
            return early
        model = body["model"]
        content: list[dict[str, Any]] = [{"type": "text", "text": behaviour.text}]
        stop = "end_turn"
        if behaviour.tool:
            tool_name, arguments = behaviour.tool
            content = [{"type": "tool_use", "id": "toolu_up_1", "name": tool_name, "input": arguments}]
            stop = "tool_use"
        usage = {"input_tokens": 20, "output_tokens": 10, "cache_read_input_tokens": 0,
                 "cache_creation_input_tokens": 0}
        message = {"id": "msg_up", "type": "message", "role": "assistant", "model": model, "content": content,
                   "stop_reason": stop, "stop_sequence": None, "usage": usage}
        if not body.get("stream"):
            return JSONResponse(message)
        return StreamingResponse(self._anthropic_events(behaviour, message), media_type="text/event-stream")

    async def _anthropic_events(self, behaviour: Behaviour, message: dict[str, Any]):
        def event(name: str, data: dict[str, Any]) -> bytes:
            return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()

        start = {**message, "content": [], "stop_reason": None, "usage": {**message["usage"], "output_tokens": 1}}
        yield event("message_start", {"type": "message_start", "message": start})
        block = message["content"][0]
        if block["type"] == "tool_use":
            yield event("content_block_start", {"type": "content_block_start", "index": 0,
                                                "content_block": {**block, "input": {}}})
            arguments = json.dumps(block["input"])
            for begin in range(0, len(arguments), 5):
                yield event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {
                    "type": "input_json_delta", "partial_json": arguments[begin:begin + 5]}})
        else:
            yield event("content_block_start", {"type": "content_block_start", "index": 0,
                                                "content_block": {"type": "text", "text": ""}})
            for word in behaviour.text.split(" "):
                yield event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                    "delta": {"type": "text_delta", "text": word + " "}})
                if behaviour.kind == "cut":
                    raise ConnectionAbortedError("cut on purpose")
        yield event("content_block_stop", {"type": "content_block_stop", "index": 0})
        yield event("message_delta", {"type": "message_delta", "delta": {"stop_reason": message["stop_reason"],
                                                                          "stop_sequence": None},
                                      "usage": {"output_tokens": message["usage"]["output_tokens"]}})
        yield event("message_stop", {"type": "message_stop"})
