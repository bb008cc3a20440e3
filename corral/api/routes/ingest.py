"""REST for reported events: `POST /ingest/events` takes a batch (the documented schema in
`corral.ingest.schema`), stores the valid events once each and says which were refused and why."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from corral.api.auth import authenticate
from corral.identity.access import Principal
from corral.ingest.schema import IngestBatch, check_events
from corral.ingest.store import as_event, owners_of, store_events

router = APIRouter(tags=["ingest"])


@router.post("/ingest/events")
async def ingest_events(request: Request, batch: IngestBatch,
                        caller: Annotated[Principal, Depends(authenticate)]) -> dict[str, Any]:
    """Store a batch of events. Keyed events already stored count as duplicates, so a batch
    can be sent again safely. Only admins may report events of other users."""
    caller.require("ingest")
    valid, rejected = check_events(batch.events)
    corral = request.app.state.corral
    async with corral.database.transaction() as connection:
        owners = await owners_of(connection, caller, {item.user for item in valid})
        stored = await store_events(connection, [as_event(item, owners[item.user], batch.source, caller.key_id)
                                                 for item in valid])
    return {"accepted": stored, "duplicates": len(valid) - stored, "rejected": rejected}
