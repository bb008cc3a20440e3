"""The model endpoints agents call, wire-compatible with OpenAI's and Anthropic's: plain
Starlette routes (the hot path skips FastAPI's request models). Each authenticates the caller
(a `gateway`-scoped key or an OIDC token) and hands the request to the LLM gateway; errors come
back in the endpoint's own dialect (corral/api/errors.py)."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from corral.api.auth import authenticate
from corral.gateway.llm.dialects import Dialect
from corral.gateway.llm.proxy import Call, client_of, parse_body


async def _call(request: Request, dialect: Dialect, operation: str) -> Call:
    principal = await authenticate(request)
    principal.require("gateway")
    headers = {name: value for name, value in request.headers.items()}
    body = parse_body(await request.body())
    return Call(dialect=dialect, operation=operation, principal=principal, body=body, headers=headers,
                request_id=request.scope.get("corral.request_id", ""), client=client_of(headers),
                mode=headers.get("x-corral-mode") or None, task_id=headers.get("x-corral-task") or
                headers.get("session_id") or None)


async def chat_completions(request: Request) -> Response:
    return await request.app.state.corral.llm.handle(await _call(request, "openai", "chat"))


async def messages(request: Request) -> Response:
    return await request.app.state.corral.llm.handle(await _call(request, "anthropic", "chat"))


async def count_tokens(request: Request) -> Response:
    return await request.app.state.corral.llm.handle(await _call(request, "anthropic", "count_tokens"))


async def models(request: Request) -> Response:
    principal = await authenticate(request)
    principal.require("gateway")
    names = await request.app.state.corral.llm.models(principal, client_of(dict(request.headers)))
    created = int(time.time())
    return JSONResponse({"object": "list", "data": [{"id": name, "object": "model", "created": created,
                                                     "owned_by": "corral"} for name in names]})


routes = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/messages", messages, methods=["POST"]),
    Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
    Route("/v1/models", models, methods=["GET"]),
]
