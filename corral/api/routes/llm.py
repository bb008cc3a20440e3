"""The model endpoints agents call, wire-compatible with OpenAI's and Anthropic's. They are the
hot path, so they skip FastAPI altogether (`ModelTraffic` sends their paths straight to plain
Starlette endpoints; everything else goes on to the REST app). Each authenticates the caller (a
`gateway`-scoped key or an OIDC token) and hands the request to the LLM gateway; errors come back
in the endpoint's own dialect (corral/api/errors.py)."""

from __future__ import annotations

import time

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from corral.api.errors import corral_error, error_response, unexpected_error
from corral.errors import CorralError

from corral.api.auth import authenticate
from corral.gateway.llm.dialects import Dialect
from corral.gateway.clients import client_of
from corral.gateway.llm.proxy import Call, parse_body


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


async def responses(request: Request) -> Response:
    return await request.app.state.corral.llm.handle(await _call(request, "openai", "responses"))


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


Endpoint = Callable[[Request], Awaitable[Response]]
ENDPOINTS: dict[str, tuple[str, Endpoint]] = {
    "/v1/chat/completions": ("POST", chat_completions),
    "/v1/responses": ("POST", responses),
    "/v1/messages": ("POST", messages),
    "/v1/messages/count_tokens": ("POST", count_tokens),
    "/v1/models": ("GET", models),
}


class ModelTraffic:
    """In front of the REST app: the model endpoints' paths (and the other hot paths given, the
    agents' hooks) go straight to their endpoints."""

    def __init__(self, app: ASGIApp, endpoints: dict[str, tuple[str, Endpoint]] = ENDPOINTS) -> None:
        self.app = app
        self.endpoints = endpoints

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self.endpoints.get(scope["path"]) if scope["type"] == "http" else None
        if found is None:
            await self.app(scope, receive, send)
            return
        scope["app"] = self.app
        request = Request(scope, receive)
        method, endpoint = found
        try:
            if scope["method"] != method:
                response = error_response(scope["path"], 405, "method_not_allowed",
                                          f"{scope['path']} takes {method}, not {scope['method']}")
            else:
                response = await endpoint(request)
        except CorralError as error:
            response = corral_error(request, error)
        except Exception as error:  # a bug: the client gets a request id, the log the trace
            response = unexpected_error(request, error)
        await response(scope, receive, send)
