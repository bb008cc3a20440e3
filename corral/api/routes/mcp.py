"""The MCP endpoints, `/mcp` and `/mcp/{server}`: in front of the REST app like the model
endpoints. Every HTTP message is authenticated (a `gateway`-scoped key or an OIDC token) before
the SDK's Streamable HTTP transport sees it, and a session is bound to the user who opened it:
anyone else presenting its id, or an id this replica did not issue, is told it does not exist
(sessions live in the replica that opened them). Errors are JSON-RPC errors."""

from __future__ import annotations

from collections import OrderedDict

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corral.api.auth import authenticate
from corral.api.errors import corral_error, is_mcp_path, jsonrpc_error, unexpected_error
from corral.errors import CorralError

MAX_SESSIONS = 20_000  # owners remembered; the SDK's own session limit is lower


class McpTraffic:
    """In front of the model endpoints' fast path and the REST app (`api`, whose state it uses)."""

    def __init__(self, app: ASGIApp, api: ASGIApp) -> None:
        self.app = app
        self.api = api
        self._owners: OrderedDict[str, int] = OrderedDict()  # session id -> user id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"] if scope["type"] == "http" else ""
        if not is_mcp_path(path):
            await self.app(scope, receive, send)
            return
        scope["app"] = self.api
        request = Request(scope, receive)
        server = path[len("/mcp/"):].strip("/") or None
        if server is not None and "/" in server:
            await jsonrpc_error(404, "not_found", f"no such endpoint: {path}; use /mcp or /mcp/SERVER")(scope, receive, send)
            return
        try:
            principal = await authenticate(request)
            principal.require("gateway")
        except CorralError as error:
            await corral_error(request, error)(scope, receive, send)
            return
        except Exception as error:  # a bug: the client gets a request id, the log the trace
            await unexpected_error(request, error)(scope, receive, send)
            return
        session = request.headers.get("mcp-session-id")
        if session is not None and self._owners.get(session) != principal.user_id:  # unknown, or someone else's
            await jsonrpc_error(404, "not_found", "session not found; start a new one")(scope, receive, send)
            return
        if session is not None and scope["method"] == "DELETE":
            self._owners.pop(session, None)
        scope["corral.mcp_server"] = server
        gateway = request.app.state.corral.mcp

        async def send_noting_session(message: Message) -> None:
            if session is None and message["type"] == "http.response.start":
                for name, value in message.get("headers", ()):
                    if name == b"mcp-session-id":
                        self._owners[value.decode("latin-1")] = principal.user_id
                        while len(self._owners) > MAX_SESSIONS:
                            self._owners.popitem(last=False)
            await send(message)

        await gateway.manager.asgi_app(scope, receive, send_noting_session)
