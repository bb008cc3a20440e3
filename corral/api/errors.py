"""Errors rendered in the REST dialect, `{"error": {"code", "message", "rule"?}}`, with the
right status. Later gateways add their dialects here, chosen by path, so that every error has
one rendering place. No stack trace ever reaches a client."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from corral.errors import CorralError
from corral.gateway.llm.dialects import Dialect, error_body
from corral.ingest import otlp_wire

log = logging.getLogger("corral.api")

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 401: "unauthenticated", 403: "forbidden"}


def rest_error(status: int, code: str, message: str, rule: str | None = None,
               headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, object] = {"code": code, "message": message}
    if rule:
        body["rule"] = rule
    return JSONResponse({"error": body}, status_code=status, headers=headers)


# JSON-RPC codes for the MCP endpoints' HTTP-level errors: MCP leaves -32000..-32019 to
# implementations (the SDK uses -32000 and -32001; -32002 is retired), and the rest are
# JSON-RPC's own invalid-request and internal-error codes. The gateway's call refusals use
# -32010..-32012 (corral/gateway/mcp/gateway.py).
_JSONRPC_CODES = {400: -32600, 401: -32013, 403: -32014, 404: -32004, 405: -32600, 413: -32600, 422: -32600,
                  429: -32015, 500: -32603, 503: -32011}


def jsonrpc_error(status: int, code: str, message: str, rule: str | None = None,
                  headers: dict[str, str] | None = None) -> JSONResponse:
    data: dict[str, object] = {"code": code}
    if rule:
        data["rule"] = rule
    body = {"jsonrpc": "2.0", "id": None,
            "error": {"code": _JSONRPC_CODES.get(status, -32000), "message": message, "data": data}}
    return JSONResponse(body, status_code=status, headers=headers)


def is_mcp_path(path: str) -> bool:
    return path == "/mcp" or path.startswith("/mcp/")


def is_otlp_path(path: str) -> bool:
    return path in ("/v1/logs", "/v1/metrics")


def otlp_error(status: int, message: str, content_type: str | None, headers: dict[str, str] | None = None) -> Response:
    """OTLP/HTTP's failure body: a google.rpc.Status in the request's encoding (protobuf or JSON)."""
    encoding = otlp_wire.answer_encoding(content_type)
    return Response(otlp_wire.status_body(status, message, encoding), status_code=status,
                    media_type=otlp_wire.MEDIA_TYPES[encoding], headers=headers)


CLAUDE_CODE_HOOK, CLINE_HOOK = "/v1/hooks/claude-code", "/v1/hooks/cline"


def is_hook_path(path: str) -> bool:
    return path in (CLAUDE_CODE_HOOK, CLINE_HOOK)


def claude_decision(effect: str, reason: str) -> dict[str, object]:
    return {"hookSpecificOutput": {"hookEventName": "PreToolUse", "permissionDecision": effect,
                                   "permissionDecisionReason": reason}}


def hook_refusal(path: str, status: int, message: str) -> Response:
    """A refusal in the hook's dialect when Corral could not even read which hook it is: for
    Claude Code a 200 whose pre-tool decision is deny (Claude Code ignores any non-2xx answer, and
    other events ignore this one), for Cline a cancel. This fails closed; the hook endpoints
    answer by the policy's `clients.fail_open` when they can read it."""
    message = f"Corral: {message}"
    if path == CLAUDE_CODE_HOOK:
        return JSONResponse(claude_decision("deny", message))
    return JSONResponse({"cancel": True, "errorMessage": message}, status_code=status)


def dialect_of(path: str) -> Dialect | None:
    """The model endpoints answer errors as the API they imitate, so SDKs raise their own errors."""
    if path.startswith("/v1/messages"):
        return "anthropic"
    if path.startswith(("/v1/chat/", "/v1/responses", "/v1/models")):
        return "openai"
    return None


def error_response(path: str, status: int, code: str, message: str, rule: str | None = None,
                   headers: dict[str, str] | None = None, content_type: str | None = None) -> Response:
    """`content_type` is the request's: OTLP answers in the encoding it was sent."""
    if is_mcp_path(path):
        return jsonrpc_error(status, code, message, rule, headers)
    if is_hook_path(path):
        return hook_refusal(path, status, f"{message} (rule {rule})" if rule else message)
    if is_otlp_path(path):
        return otlp_error(status, f"{message} (rule {rule})" if rule else message, content_type, headers)
    dialect = dialect_of(path)
    if dialect is None:
        return rest_error(status, code, message, rule, headers)
    if rule:
        message = f"{message} (rule {rule})" if rule not in message else message
    return JSONResponse(error_body(dialect, status, code, message), status_code=status, headers=headers)


def _describe(errors: list[dict]) -> tuple[str, str]:
    first = errors[0]
    if first.get("type") == "json_invalid":
        return "invalid_json", f"the request body is not valid JSON: {first.get('ctx', {}).get('error', first['msg'])}"
    parts = []
    for error in errors[:5]:
        where = ".".join(str(part) for part in error["loc"] if part != "body") or "body"
        if error.get("type") == "extra_forbidden":
            parts.append(f"{where}: unknown field")
        else:
            parts.append(f"{where}: {error['msg']}")
    return "invalid_request", "; ".join(parts)


def corral_error(request: Request, error: CorralError) -> Response:
    headers = {"WWW-Authenticate": 'Bearer realm="corral"'} if error.status == 401 else None
    if getattr(error, "retry_after", None):
        headers = {**(headers or {}), "Retry-After": error.retry_after}
    return error_response(request.url.path, error.status, error.code, error.message, error.rule, headers,
                          request.headers.get("content-type"))


def unexpected_error(request: Request, error: Exception) -> Response:
    """A bug: logged with its trace under the request id; the client gets the id, never the trace."""
    request_id = request.scope.get("corral.request_id", "")
    log.exception("unhandled error in %s %s (request %s)", request.method, request.url.path, request_id,
                  exc_info=error)
    return error_response(request.url.path, 500, "internal",
                          f"internal error; the server log has the details under request id {request_id}",
                          headers={"x-corral-request-id": request_id},
                          content_type=request.headers.get("content-type"))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(CorralError)
    async def _corral_error(request: Request, error: CorralError) -> Response:
        return corral_error(request, error)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, error: RequestValidationError) -> Response:
        code, message = _describe(list(error.errors()))
        return error_response(request.url.path, 400 if code == "invalid_json" else 422, code, message,
                              content_type=request.headers.get("content-type"))

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, error: HTTPException) -> Response:
        code = _HTTP_CODES.get(error.status_code, "http_error")
        message = str(error.detail) if error.status_code != 404 else f"no such endpoint: {request.method} {request.url.path}"
        return error_response(request.url.path, error.status_code, code, message, headers=getattr(error, "headers", None),
                              content_type=request.headers.get("content-type"))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> Response:
        return unexpected_error(request, error)
