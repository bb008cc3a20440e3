"""ASGI middleware that every request passes: a request id on every response, and a bound on
no NUL characters in the URL, and the size of request bodies (checked against Content-Length up front; a chunked body is read up
to the limit before the app sees it, so it cannot get around the bound)."""

from __future__ import annotations

import logging
import secrets

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corral.api.errors import error_response
from corral.errors import PayloadTooLarge

access = logging.getLogger("corral.access")


class RequestIdMiddleware:
    """A request id on every response, and the access log: one line per request, except model
    and tool traffic, which is recorded as events (richer, and a log line each cost a tenth of
    the gateway's time)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = secrets.token_hex(8)
        scope["corral.request_id"] = request_id
        logged = not scope["path"].startswith(("/v1/", "/mcp"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-corral-request-id", request_id.encode())]
                if logged:
                    client = scope.get("client") or ("-", 0)
                    access.info('%s:%s - "%s %s HTTP/%s" %d', client[0], client[1], scope["method"], scope["path"],
                                scope.get("http_version", "1.1"), message["status"])
            await send(message)

        await self.app(scope, receive, send_with_id)


class ForgetKeysOnChange:
    """After a change made through the REST API succeeds (its transaction committed), this
    replica forgets the keys it had checked: a revoked key, a disabled user, a changed role
    count from the next request on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS") \
                or not scope["path"].startswith("/api/"):
            await self.app(scope, receive, send)
            return

        async def forget_when_done(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] < 400:
                scope["app"].state.corral.keys.clear()
            await send(message)

        await self.app(scope, receive, forget_when_done)


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"the request body is larger than this server accepts ({self.max_bytes} bytes)")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if b"\x00" in scope.get("raw_path", b"") or b"%00" in scope.get("query_string", b"").lower() \
                or b"%00" in scope.get("raw_path", b"").lower():
            await error_response(scope["path"], 400, "invalid_request", "the URL contains a NUL character")(
                scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await _reject(scope, receive, send, self._too_large() if declared.isdigit() else None)
            return
        if declared is not None:
            await self.app(scope, receive, send)  # the server holds the body to its declared length
            return
        # No length declared (chunked): read up to the limit before the app sees anything.
        messages: list[Message] = []
        received = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                await _reject(scope, receive, send, self._too_large())
                return
            if not message.get("more_body", False):
                break
        replay = iter(messages)

        async def replaying_receive() -> Message:
            return next(replay, None) or await receive()

        await self.app(scope, replaying_receive, send)


async def _reject(scope: Scope, receive: Receive, send: Send, error: PayloadTooLarge | None) -> None:
    if error is None:
        response = error_response(scope["path"], 400, "invalid_request", "invalid Content-Length header")
    else:
        response = error_response(scope["path"], error.status, error.code, error.message)
    await response(scope, receive, send)
