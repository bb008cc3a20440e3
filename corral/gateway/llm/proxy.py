"""The LLM gateway's one path: a client's request, in its dialect, decided by the policy, routed
to the first fit target of its profile (later targets are fallbacks), passed back as it arrives,
priced, and recorded as an `llm.request` event.

A target that fails before any byte reached the client (429, 5xx, timeout, refused, broken
answer) is marked in `TargetHealth` and the next target is tried, after a short jittered pause;
once a stream has started it is never replayed. Every answer names what served it in
`x-corral-target`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from corral.errors import CorralError, Forbidden, InvalidRequest, NotFound
from corral.events.model import Event, utcnow
from corral.events.recorder import EventRecorder
from corral.gateway.llm.dialects import SPOKEN, Dialect, Observed, StreamReader, error_body, reader_for
from corral.gateway.llm.health import health_for
from corral.gateway.llm.pricing import cost_usd
from corral.gateway.llm.spending import Admission, Spending
from corral.gateway.llm.tasks import Happening, TaskTracker, conversation_of, mode_of, task_of
from corral.gateway.llm.tools import ToolGate, cut_tools, offered_names
from corral.gateway.llm.upstream import (Opened, UpstreamFailed, Upstreams, missing_credential, once,
                                          retryable_status)
from corral.identity.access import Principal
from corral.policy.active import PolicyState
from corral.policy.engine import EffectivePolicy, Request, Subject
from corral.policy.schema import Policy, Provider

RETRY_PAUSE_S = (0.01, 0.05)  # the jittered pause before trying the next target
log = logging.getLogger("corral.gateway")


class UpstreamsExhausted(CorralError):
    status, code = 502, "upstream_unavailable"

    def __init__(self, message: str, status: int = 502, retry_after: str | None = None) -> None:
        super().__init__(message)
        self.status, self.retry_after = status, retry_after


@dataclass
class Call:
    """One request as the gateway sees it."""

    dialect: Dialect
    operation: str  # "chat" (chat completions, messages), "responses", "count_tokens"
    principal: Principal
    body: dict[str, Any]
    headers: dict[str, str]
    request_id: str
    client: str
    mode: str | None = None
    task_id: str | None = None
    started: float = field(default_factory=time.perf_counter)


@dataclass
class Outcome:
    """What the event of a call says."""

    decision: str = "allow"
    status: int = 200
    outcome: str = "ok"
    profile: str | None = None
    target: str | None = None
    tried: list[str] = field(default_factory=list)
    seen: Observed = field(default_factory=Observed)
    cost: float | None = None
    first_byte_ms: float | None = None
    error: str | None = None
    gate: ToolGate | None = None
    tools_removed: list[str] = field(default_factory=list)
    usage_asked_for_us: bool = False  # Corral added include_usage: the client does not expect the usage chunk


def parse_body(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except ValueError as error:
        raise InvalidRequest(f"the request body is not valid JSON: {error}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    if "functions" in body or "function_call" in body:  # would bypass the judging of tool calls
        raise InvalidRequest("the deprecated `functions` and `function_call` are not accepted through Corral; "
                             "send `tools` and `tool_choice` instead")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("`model` is required: a profile name (see GET /v1/models) or provider/model")
    return body


class LlmGateway:
    def __init__(self, policy: PolicyState, recorder: EventRecorder, spending: Spending,
                 task_idle_s: float = 1800.0) -> None:
        self._policy = policy
        self._recorder = recorder
        self.spending = spending
        self.upstreams = Upstreams()
        self.health = health_for(spending.counters)
        self.tasks = TaskTracker(task_idle_s)

    async def close(self) -> None:
        await self.upstreams.close()
        await self.spending.counters.close()

    async def models(self, principal: Principal, client: str) -> list[str]:
        """The profiles this caller may use (what `GET /v1/models` lists)."""
        effective = await self._policy.current()
        subject = _subject(principal, client)
        now = utcnow()
        return [name for name in effective.compiled.policy.profiles
                if effective.decide(Request("llm.request", name, subject, now=now)).effect == "allow"]

    async def handle(self, call: Call) -> Response:
        result = Outcome()
        asked = call.body["model"]
        task_requests = task_cost = None
        if call.operation in ("chat", "responses"):
            conversation = conversation_of(call.dialect, call.body)
            call.task_id = task_of(call.headers, call.body, conversation)
            call.mode = mode_of(call.headers, conversation)
            task_requests, task_cost = self.tasks.usage(call.task_id)  # what the task used before this request
            self._happened(call, self.tasks.before(call.task_id, conversation, (call.principal, call.client)))
        admission: Admission | None = None
        try:
            effective = await self._policy.current()
            _check_known(asked, effective.compiled.policy)
            now = utcnow()
            decision = effective.decide(Request("llm.request", asked, _subject(call.principal, call.client),
                                                mode=call.mode, now=now, task_requests=task_requests,
                                                task_cost_usd=task_cost))
            result.decision = decision.effect
            result.profile = decision.obligations.get("profile")
            if decision.effect != "allow":
                why = "needs a confirmation or an approval, which a model request cannot wait for" \
                    if decision.effect != "deny" else "is denied"
                raise Forbidden(f"{asked!r} {why}: {decision.reason}", rule=",".join(decision.rules) or None)
            admission = await self.spending.admit(effective.compiled.policy, call.principal, result.profile, now,
                                                  decision.obligations.get("max_concurrency"))
            targets = decision.obligations.get("targets") or [asked]
            providers = effective.compiled.policy.providers
            if call.operation != "count_tokens":
                _cap_tokens(call, decision.obligations.get("max_tokens"))
            if call.operation in ("chat", "responses") and call.body.get("tools"):
                result.gate = self._gate(call, effective, now, result)
            if call.dialect == "openai" and call.operation == "chat" and call.body.get("stream"):
                result.usage_asked_for_us = _ask_for_usage(call.body)
            opened, provider = await self._open_first(call, targets, providers, result)
        except BaseException as error:
            if admission is not None:
                await self.spending.release(admission)
            if isinstance(error, CorralError):
                result.status, result.outcome, result.error = error.status, _outcome_of(error), error.message
                self._record(call, result)
            raise
        if call.body.get("stream") and opened.status == 200:
            async def abandoned() -> None:  # the client left before the stream began
                result.outcome = "cancelled"
                await opened.close()
                await self._finish(call, result, provider, admission)

            return EventStream(self._relay(call, opened, provider, result, admission), _served_headers(result),
                               abandoned)
        try:
            body = await opened.read()
        except BaseException as error:  # broke off, or the client left: nothing to pass on
            result.status, result.outcome = 502, "error" if isinstance(error, Exception) else "cancelled"
            result.error = f"{result.target} {getattr(error, 'message', type(error).__name__)}"
            await self._finish(call, result, provider, admission)
            if isinstance(error, UpstreamFailed):
                raise UpstreamsExhausted(f"the answer of {result.target} broke off: {error.message}") from None
            raise
        result.status = opened.status
        if opened.status == 200:  # a whole answer of 200 was read and parsed by _checked_json
            if result.gate is not None:
                try:
                    if result.gate.rewrite(opened.parsed):
                        body = json.dumps(opened.parsed).encode()
                except Exception:  # an answer of a shape nobody expected: refused, never passed on unjudged
                    log.exception("judging the answer of %s failed (request %s)", result.target, call.request_id)
                    result.status, result.outcome = 502, "error"
                    result.error = f"{result.target} answered an unreadable shape"
                    await self._finish(call, result, provider, admission)
                    raise UpstreamsExhausted(f"{result.target} answered in a shape Corral cannot read") from None
            reader_for(call.dialect, call.operation)(opened.parsed, result.seen)
        else:
            result.outcome = "error"
        await self._finish(call, result, provider, admission)
        return Response(body, status_code=opened.status, media_type=opened.content_type or "application/json",
                        headers=_served_headers(result))

    async def _finish(self, call: Call, result: Outcome, provider: Provider, admission: Admission) -> None:
        """The answer is out (or broke off): price it, charge it, record it, free its seat."""
        result.cost = cost_usd(provider, result.target.partition("/")[2], result.seen.usage)
        usage = result.seen.usage
        try:
            crossed = await self.spending.charge(admission, result.cost,
                                                 (usage.input_tokens or 0) + (usage.output_tokens or 0))
        finally:
            await self.spending.release(admission)
            self._record(call, result)
            self._answered(call, result)
        for blocked in result.gate.blocked if result.gate is not None else ():
            self._emit(call, "tool.call", action="tool.call", resource=blocked.resource, decision="deny",
                       outcome="blocked", attributes={"tool": blocked.name, "rules": list(blocked.rules),
                                                      "reason": blocked.reason})
        for kind, attributes in crossed:
            self._emit(call, kind, resource=attributes["budget"], attributes=attributes)

    def _gate(self, call: Call, effective: EffectivePolicy, now: datetime, result: Outcome) -> ToolGate:
        """Cut the offered tools to the mode's groups; judge the model's calls on the way back."""
        result.tools_removed = cut_tools(call.dialect, call.body, effective.mode_groups(call.mode))
        subject = _subject(call.principal, call.client)

        def decide(action: str, resource: str) -> tuple[str, str, tuple[str, ...]]:
            decision = effective.decide(Request(action, resource, subject, mode=call.mode, now=now))
            return decision.effect, decision.reason, decision.rules

        return ToolGate("responses" if call.operation == "responses" else call.dialect,
                        set(offered_names(call.dialect, call.body)), decide)

    async def _fit(self, target: str, provider: Provider) -> bool:
        try:
            return await self.health.available(target, provider.health)
        except Exception:  # health unknown (Redis away): try the target rather than refuse everyone
            log.warning("could not check the health of %s", target, exc_info=True)
            return True

    async def _note(self, target: str, provider: Provider, failed: bool) -> None:
        """A target's outcome, for its health. Losing one (Redis away) must not fail a request."""
        try:
            await self.health.record(target, provider.health, failed=failed)
        except Exception:
            log.warning("could not record the outcome of %s", target, exc_info=True)

    async def _open_first(self, call: Call, targets: list[str], providers: dict[str, Provider],
                          result: Outcome) -> tuple[Opened, Provider]:
        failures: list[str] = []
        errors: list[UpstreamFailed] = []
        candidates = [t for t in targets if t.partition("/")[0] in providers]
        spoken = [t for t in candidates if call.dialect in SPOKEN[providers[t.partition("/")[0]].kind]]
        if not spoken:
            raise InvalidRequest(f"{call.body['model']!r} is served by {', '.join(candidates)}, which do not speak "
                                 f"the {call.dialect} API; call the other endpoint (/v1/messages or /v1/chat/completions)")
        for target in spoken:
            name, _, model = target.partition("/")
            provider = providers[name]
            missing = missing_credential(provider)
            if missing:
                failures.append(f"{target} was skipped: its credential {missing} is not set on this server")
                continue
            if not await self._fit(target, provider):
                failures.append(f"{target} is cooling down after errors")
                continue
            if result.tried:
                await asyncio.sleep(random.uniform(*RETRY_PAUSE_S))
            result.tried.append(target)
            body = {**call.body, "model": model}
            try:
                opened = await self.upstreams.open(name, provider, call.dialect, call.operation, body, call.headers)
                if retryable_status(opened.status):
                    await opened.read()
                    raise UpstreamFailed(f"answered {opened.status}", opened.status, retry_after=opened.retry_after)
                if opened.status in (401, 403):  # the provider refused Corral's own credential: never shown
                    await opened.close()
                    raise UpstreamFailed(f"refused Corral's credential ({opened.status}); an administrator must "
                                         "check the provider's key", opened.status)
                if opened.status == 200 and not call.body.get("stream"):
                    opened = await _checked_json(opened)
            except UpstreamFailed as error:
                await self._note(target, provider, failed=True)
                failures.append(f"{target} {error.message}")
                errors.append(error)
                continue
            except BaseException:
                await self._note(target, provider, failed=True)
                raise
            await self._note(target, provider, failed=False)
            result.target = target
            return opened, provider
        status, retry_after = 502, None
        if errors and len(errors) == len(failures):  # every target was tried (none skipped or resting)
            if all(error.timeout for error in errors):
                status = 504
            elif all(error.status == 429 for error in errors):
                waits = [error.retry_after for error in errors if (error.retry_after or "").isdigit()]
                status, retry_after = 429, min(waits, key=int) if waits else "1"
        raise UpstreamsExhausted(f"no target could answer {call.body['model']!r}: {'; '.join(failures)}",
                                 status, retry_after)

    async def _relay(self, call: Call, opened: Opened, provider: Provider, result: Outcome,
                     admission: Admission) -> AsyncIterator[bytes]:
        reader = StreamReader(call.dialect, result.seen, call.operation)
        gate = result.gate.stream() if result.gate is not None else None

        def passing(events: list[bytes]) -> bytes:
            out = []
            for event in events:
                for passed in gate.feed(event) if gate is not None else (event,):
                    reader.observe(passed)
                    if not (result.usage_asked_for_us and _USAGE_ONLY.search(passed)):
                        out.append(passed)
            return b"".join(out)

        try:
            async for chunk in opened.chunks:
                out = passing(reader.split(chunk))
                if out:
                    if result.first_byte_ms is None:
                        result.first_byte_ms = (time.perf_counter() - call.started) * 1000
                    yield out
            rest = reader.rest()  # a last event without its blank line is an event all the same
            out = passing([rest + b"\n\n"] if rest.strip() else []) + b"".join(gate.flush() if gate else [])
            if out:
                yield out
        except asyncio.CancelledError:  # the client went away: the upstream request is closed below
            result.outcome = "cancelled"
            raise
        except Exception as error:  # too late for another target: the client is told in-stream
            if not isinstance(error, UpstreamFailed):
                log.exception("relaying the answer of %s failed (request %s)", result.target, call.request_id)
            message = error.message if isinstance(error, UpstreamFailed) else "Corral could not pass on the rest"
            result.outcome, result.error = "error", f"{result.target} {message}"
            yield _stream_error(call.dialect, f"the model's answer broke off: {message}")
        finally:
            await opened.close()
            await _unstoppable(self._finish(call, result, provider, admission))

    def _answered(self, call: Call, result: Outcome) -> None:
        if call.task_id and call.operation in ("chat", "responses") and result.outcome == "ok":
            self._happened(call, self.tasks.after(call.task_id, call.client, result.seen, result.cost))

    def _happened(self, call: Call, happenings: list[Happening]) -> None:
        for happening in happenings:
            self._emit(call, happening.kind, resource=happening.resource, outcome=happening.outcome,
                       action=happening.kind if happening.kind in ("command.exec", "tool.call") else None,
                       attributes=happening.attributes)

    def _emit(self, call: Call, kind: str, attributes: dict[str, Any], **fields: Any) -> None:
        """An event of this call: who, which client, task and mode, and its request id."""
        principal = call.principal
        self._recorder.emit(Event(kind=kind, user_email=principal.email, team=principal.team, key_id=principal.key_id,
                                  client=call.client, task_id=call.task_id, mode=call.mode,
                                  attributes={**attributes, "request_id": call.request_id}, **fields))

    def sweep_tasks(self) -> None:
        """Record the tasks that went idle without completing as abandoned."""
        for task_id, (principal, client), happening in self.tasks.sweep():
            self._recorder.emit(Event(kind=happening.kind, user_email=principal.email, team=principal.team,
                                      key_id=principal.key_id, client=client, task_id=task_id,
                                      outcome=happening.outcome, attributes=happening.attributes))

    def _record(self, call: Call, result: Outcome) -> None:
        usage = result.seen.usage
        attributes: dict[str, Any] = {"profile": result.profile, "target": result.target, "status": result.status,
                                      "stream": bool(call.body.get("stream")),
                                      "dialect": call.dialect, "cached_tokens": usage.cache_read_tokens}
        if result.target:
            attributes["provider"], _, attributes["model"] = result.target.partition("/")
        if len(result.tried) > 1 or (result.tried and result.target != result.tried[0]):
            attributes["fallbacks"] = result.tried
        if result.first_byte_ms is not None:
            attributes["first_byte_ms"] = round(result.first_byte_ms, 2)
        if result.seen.tool_calls:
            attributes["tool_calls"] = [call_["name"] for call_ in result.seen.tool_calls]
        if result.seen.stop_reason:
            attributes["stop_reason"] = result.seen.stop_reason
        if result.error:
            attributes["error"] = result.error
        if result.tools_removed:
            attributes["tools_removed"] = result.tools_removed
        self._emit(call, "llm.request", attributes, action="llm.request", resource=call.body.get("model"),
                   decision=result.decision, outcome=result.outcome,
                   duration_ms=round((time.perf_counter() - call.started) * 1000, 2), tokens_in=usage.input_tokens,
                   tokens_out=usage.output_tokens, cost_usd=result.cost)


def _check_known(asked: str, policy: Policy) -> None:
    provider, slash, model = asked.partition("/")
    if asked not in policy.profiles and not (slash and model and provider in policy.providers):
        raise NotFound(f"{asked!r} is neither a profile nor a provider/model of a known provider; "
                       "GET /v1/models lists what you may use")


def _subject(principal: Principal, client: str) -> Subject:
    return Subject(principal.email, principal.teams, principal.roles, client)


_USAGE_ONLY = re.compile(rb'"choices": ?\[\]')  # the closing chunk include_usage adds


def _ask_for_usage(body: dict[str, Any]) -> bool:
    """Make a streamed chat completion report its usage (else it cannot be priced or counted);
    True when the client had not asked, so the extra chunk is kept from it."""
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage"):
        return False
    body["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return True


def _cap_tokens(call: Call, cap: int | None) -> None:
    """The policy's token cap (a profile's `max_tokens`, an obligation, an override) wins over a
    larger request; a request without one gets the cap."""
    if not cap:
        return
    body = call.body
    field_name = "max_output_tokens" if call.operation == "responses" else \
        "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    asked = body.get(field_name)
    if not isinstance(asked, int) or asked > cap:
        body[field_name] = cap


async def _checked_json(opened: Opened) -> Opened:
    """A whole answer must be JSON; an HTML error page with status 200 is a broken target."""
    body = await opened.read()
    try:
        parsed = json.loads(body)
    except ValueError:
        kind = "an HTML page" if body.lstrip()[:1] == b"<" else "something that is not JSON"
        raise UpstreamFailed(f"answered {kind} instead of JSON") from None
    return Opened(opened.status, opened.content_type, once(body), opened.close, parsed)


async def _unstoppable(work: Awaitable[None]) -> None:
    """Accounting that must happen even when the client leaves: run apart, and waited for."""
    task = asyncio.ensure_future(work)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task], timeout=10)
        raise


class EventStream:
    """A server-sent event stream passed on chunk by chunk. When the client goes away, the relay
    is cancelled, which closes the upstream request. (Starlette's StreamingResponse does the same
    with a task group per stream; this costs one task.)"""

    def __init__(self, chunks: AsyncGenerator[bytes, None], headers: dict[str, str],
                 abandoned: Callable[[], Awaitable[None]]) -> None:
        self._chunks = chunks
        self._abandoned = abandoned
        self._headers = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
                         *((name.encode(), value.encode()) for name, value in headers.items())]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        streaming = asyncio.current_task()
        assert streaming is not None
        gone = False

        async def watch() -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            gone = True
            streaming.cancel()

        watcher = asyncio.create_task(watch())
        began = False
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self._headers})
            began = True
            async for chunk in self._chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not gone:
                raise
            streaming.uncancel()  # the client left: nothing more to say, nobody to say it to
        finally:
            watcher.cancel()
            if began:
                await self._chunks.aclose()
            else:  # the relay never ran, so its own accounting will not: do it here
                await _unstoppable(self._abandoned())


def _stream_error(dialect: Dialect, message: str) -> bytes:
    body = json.dumps(error_body(dialect, 502, "upstream_broke_off", message))
    return (f"event: error\ndata: {body}\n\n" if dialect == "anthropic" else f"data: {body}\n\n").encode()


def _served_headers(result: Outcome) -> dict[str, str]:
    headers = {"x-corral-target": result.target or ""}
    if result.profile:
        headers["x-corral-profile"] = result.profile
    if len(result.tried) > 1:
        headers["x-corral-fallbacks"] = ",".join(result.tried[:-1])
    return headers


def _outcome_of(error: CorralError) -> str:
    if error.status in (401, 403):
        return "denied"
    if error.status == 429:
        return "limited"
    if error.status == 504:
        return "timeout"
    return "error"
