"""OTLP/HTTP receiver: `POST /v1/logs` and `POST /v1/metrics` take what Claude Code, Cline or any
OpenTelemetry SDK exports (protobuf or JSON, gzip or not) and store it as events, each record
once. It answers in OTLP's terms: an Export*ServiceResponse, with `partial_success` when records
were left out; its errors are google.rpc.Status bodies (rendered by corral.api.errors), never a
500 for what a client sent. The OTLP spec describes these endpoints, so they stay out of the REST
API's OpenAPI document."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from corral.api.auth import authenticate
from corral.errors import InvalidRequest, Unavailable
from corral.identity.access import Principal
from corral.ingest import otlp_wire
from corral.ingest.otlp import Reading, attribute, read_logs, read_metrics
from corral.ingest.store import as_event, owners_of, store_events

router = APIRouter(tags=["otlp"])
log = logging.getLogger("corral.ingest")
SOURCE = "otlp"
BODY_SECONDS = 30.0  # to receive the body
STORE_SECONDS = 30.0  # to store the events; an exporter retries a 503


def read_export(signal: otlp_wire.Signal, body: bytes, encoding: otlp_wire.Encoding, content_encoding: str | None,
                limit: int) -> Reading:
    """Inflate, decode and read one export (CPU-bound: run off the event loop)."""
    request = otlp_wire.decode(signal, otlp_wire.inflate(body, content_encoding, limit), encoding)
    now = datetime.now(timezone.utc)
    return read_logs(request, now) if signal == "logs" else read_metrics(request, now)  # type: ignore[arg-type]


async def _export(request: Request, caller: Principal, signal: otlp_wire.Signal) -> Response:
    caller.require("ingest")
    encoding = otlp_wire.encoding_of(request.headers.get("content-type"))
    corral = request.app.state.corral
    try:
        async with asyncio.timeout(BODY_SECONDS):
            body = await request.body()
    except TimeoutError:
        raise InvalidRequest(f"the request body did not arrive within {BODY_SECONDS:.0f} s") from None
    reading = await asyncio.to_thread(read_export, signal, body, encoding, request.headers.get("content-encoding"),
                                      corral.settings.max_body_bytes)
    events = attribute(reading.reported, caller.email, "admin" in caller.roles)
    try:
        async with asyncio.timeout(STORE_SECONDS), corral.database.transaction() as connection:
            owners = await owners_of(connection, caller, {event.user for event in events})
            await store_events(connection, [as_event(event, owners[event.user], SOURCE, caller.key_id)
                                            for event in events])
    except TimeoutError:
        raise Unavailable("storing the export took too long; the exporter may send it again") from None
    if reading.rejected or reading.unknown:
        log.debug("OTLP %s from %s: %d events, %s; kept as agent.message: %s", signal, caller.email, len(events),
                  reading.message() or "none rejected", dict(reading.unknown))
    return Response(otlp_wire.export_response(signal, reading.rejected, reading.message(), encoding),
                    media_type=otlp_wire.MEDIA_TYPES[encoding])


@router.post("/v1/logs", include_in_schema=False)
async def export_logs(request: Request, caller: Annotated[Principal, Depends(authenticate)]) -> Response:
    """OTLP logs: Claude Code's and Cline's events."""
    return await _export(request, caller, "logs")


@router.post("/v1/metrics", include_in_schema=False)
async def export_metrics(request: Request, caller: Annotated[Principal, Depends(authenticate)]) -> Response:
    """OTLP metrics: every data point, kept for reference."""
    return await _export(request, caller, "metrics")
