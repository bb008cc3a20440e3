"""The hook endpoints agents call before and after each tool use: `/v1/hooks/claude-code` (Claude
Code's HTTP hooks) and `/v1/hooks/cline` (Cline's hook scripts post their stdin, naming their
hook in `?hook=`). Like the model endpoints they skip FastAPI (they are on every tool use's
path) and always answer in the client's own terms:

- Claude Code: a pre-tool decision is `hookSpecificOutput.permissionDecision` (allow, ask, deny)
  with its reason. Claude Code treats any answer but a 2xx as a non-blocking error, so a refusal
  (bad credentials, input Corral cannot read while the policy fails closed) is a 200 that denies.
- Cline: `{"cancel": bool, "errorMessage"?}`, whatever the HTTP status (the script prints it).
"""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from corral.api.auth import authenticate
from corral.api.errors import CLAUDE_CODE_HOOK as CLAUDE_CODE, CLINE_HOOK as CLINE, claude_decision, hook_refusal
from corral.errors import CorralError
from corral.hooks.reading import HookCall, UnreadableHook, read_claude_code, read_cline
from corral.hooks.service import Verdict

# Cline hooks that can stop work before it starts; a refusal of the others changes nothing.
_CLINE_GATES = frozenset({"pre_tool", "task_started", "task_resumed", "prompt"})


async def claude_code(request: Request) -> Response:
    return await _timed(request, CLAUDE_CODE)


async def cline(request: Request) -> Response:
    return await _timed(request, CLINE)


async def _timed(request: Request, path: str) -> Response:
    """The answer, with how long Corral took in `Server-Timing` (what bench/hooks.py reports)."""
    started = time.perf_counter()
    response = await _hook(request, path)
    response.headers["server-timing"] = f"corral;dur={(time.perf_counter() - started) * 1000:.3f}"
    return response


async def _hook(request: Request, path: str) -> Response:
    hooks = request.app.state.corral.hooks
    try:
        call = _read(path, await request.body(), request.query_params.get("hook"))
    except UnreadableHook as error:
        if await hooks.fail_open():
            return _answer(path, None, Verdict("allow", ""), 400, f"Corral could not read this hook: {error}")
        return hook_refusal(path, 400, f"Corral could not read this hook ({error}), and the policy blocks "
                                       "tools while Corral cannot decide")
    try:
        principal = await authenticate(request)
        principal.require("gateway")
    except CorralError as error:
        return _answer(path, call, Verdict("deny", f"Corral refused this hook's credentials: {error.message}"),
                       error.status, error.message)
    return _answer(path, call, await hooks.handle(principal, call))


def _read(path: str, body: bytes, hook: str | None) -> HookCall:
    try:
        payload = json.loads(body)
    except ValueError as error:  # UnicodeDecodeError included
        raise UnreadableHook(f"the body is not valid JSON: {error}") from None
    if path == CLAUDE_CODE:
        return read_claude_code(payload)
    if hook is not None and not (0 < len(hook) <= 64 and hook.replace("_", "").isalnum()):
        raise UnreadableHook(f"?hook= names a hook file: letters, digits and _, not {hook[:40]!r}")
    return read_cline(payload, hook)


def _answer(path: str, call: HookCall | None, verdict: Verdict | None, status: int = 200,
            problem: str | None = None) -> Response:
    """The answer to one hook. `verdict` is None for a hook that only reports; `problem` makes
    a non-blocking error of a hook whose refusal would mean nothing."""
    stage = call.stage if call is not None else None
    if path == CLAUDE_CODE:
        if stage == "pre_tool" and verdict is not None:
            return JSONResponse(claude_decision(verdict.effect, verdict.reason))
        if stage == "prompt" and verdict is not None and verdict.effect == "deny":
            return JSONResponse({"decision": "block", "reason": verdict.reason})
        if problem is not None:
            return JSONResponse({"error": {"code": "hook_refused", "message": problem}}, status_code=status)
        return JSONResponse({})
    cancel = verdict is not None and verdict.effect != "allow" and (stage in _CLINE_GATES or stage is None)
    body: dict[str, Any] = {"cancel": cancel}
    if cancel and verdict is not None:
        body["errorMessage"] = f"Corral: {verdict.reason}"
    elif problem is not None:
        body["errorMessage"] = f"Corral: {problem}"
    return JSONResponse(body, status_code=status)


ENDPOINTS = {CLAUDE_CODE: ("POST", claude_code), CLINE: ("POST", cline)}
