"""REST routes for the audit ledger: its public key and latest signed checkpoint (public, so
anyone can keep copies), and for admins and auditors the records, every checkpoint, and
inclusion and consistency proofs against signed tree sizes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import PlainTextResponse, StreamingResponse
from sqlalchemy import select

from corral.api.auth import authenticate
from corral.errors import InvalidRequest, NotFound
from corral.identity.access import Principal
from corral.store.tables import audit_checkpoints, audit_head, audit_records

router = APIRouter(tags=["audit"])
Caller = Annotated[Principal, Depends(authenticate)]
Seq = Annotated[int, Query(ge=0, le=2**62)]
READERS = ("admin", "auditor")


def _record(row: Any) -> dict[str, Any]:
    return {"seq": row.seq, "time": row.time, "actor": row.actor, "action": row.action, "resource": row.resource,
            "decision": row.decision, "outcome": row.outcome, "payload_sha256": row.payload_sha256,
            "leaf_hash": row.leaf_hash}


def _state(request: Request):  # noqa: ANN202 - the app's Corral
    return request.app.state.corral


@router.get("/audit/public-key")
async def public_key(request: Request) -> dict[str, str]:
    """The Ed25519 key that signs checkpoints, as a C2SP/sumdb verifier key. Public."""
    signer = _state(request).checkpointer.signer
    return {"origin": signer.name, "key": str(signer.verifier)}


@router.get("/audit/checkpoint", response_class=PlainTextResponse)
async def latest_checkpoint(request: Request) -> str:
    """The latest signed checkpoint (C2SP tlog-checkpoint in a signed note). Public."""
    async with _state(request).database.read() as connection:
        row = (await connection.execute(
            select(audit_checkpoints.c.note).order_by(audit_checkpoints.c.size.desc()).limit(1))).first()
    if row is None:
        raise NotFound("no checkpoint has been signed yet")
    return row.note


@router.get("/audit/checkpoints")
async def checkpoints(request: Request, caller: Caller, limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
                      ) -> dict[str, Any]:
    """Every signed checkpoint, oldest first."""
    caller.require("read", *READERS)
    async with _state(request).database.read() as connection:
        rows = await connection.execute(select(audit_checkpoints).order_by(audit_checkpoints.c.size).limit(limit))
        return {"checkpoints": [{"size": r.size, "root": r.root, "note": r.note, "created_at": r.created_at.isoformat()}
                                for r in rows]}


@router.get("/audit/records")
async def records(
    request: Request, caller: Caller, after: Annotated[int, Query(ge=-1, le=2**62)] = -1,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000, actor: str | None = None,
    action: Annotated[str | None, Query(description="exact, or a prefix like `policy.*`")] = None,
    since: Annotated[str | None, Query(description="RFC 3339 UTC time, e.g. 2026-11-26T00:00:00Z")] = None,
) -> dict[str, Any]:
    """Records in sequence order after `after`; `next` is the cursor for the following page."""
    caller.require("read", *READERS)
    query = select(audit_records).where(audit_records.c.seq > after)
    if actor:
        query = query.where(audit_records.c.actor == actor.strip().lower())
    if action:
        query = query.where(audit_records.c.action.startswith(action[:-1]) if action.endswith("*")
                            else audit_records.c.action == action)
    if since:
        query = query.where(audit_records.c.time >= since.replace("+00:00", "Z"))
    async with _state(request).database.read() as connection:
        rows = list(await connection.execute(query.order_by(audit_records.c.seq).limit(limit)))
        size = (await connection.execute(select(audit_head.c.size).where(audit_head.c.id == 1))).scalar_one()
    return {"records": [_record(r) for r in rows], "size": size,
            "next": rows[-1].seq if len(rows) == limit else None}


async def _signed_size(connection: Any, size: int | None) -> tuple[int, str | None]:
    """The tree size to prove against (default: the latest checkpoint) and its signed note."""
    query = select(audit_checkpoints).order_by(audit_checkpoints.c.size.desc()).limit(1)
    if size is not None:
        query = select(audit_checkpoints).where(audit_checkpoints.c.size == size)
    row = (await connection.execute(query)).first()
    if row is None:
        if size is None:
            raise NotFound("no checkpoint has been signed yet; try again in a few seconds")
        head = (await connection.execute(select(audit_head.c.size).where(audit_head.c.id == 1))).scalar_one()
        if size > head:
            raise InvalidRequest(f"the ledger has {head} records, not {size}")
        return size, None
    return row.size, row.note


@router.get("/audit/proof/inclusion")
async def inclusion_proof(request: Request, caller: Caller, seq: Seq, size: Seq | None = None) -> dict[str, Any]:
    """Proof that record `seq` is in the tree of `size` (default: the latest checkpoint's)."""
    caller.require("read", *READERS)
    corral = _state(request)
    async with corral.database.read() as connection:
        size, note = await _signed_size(connection, size)
        if seq >= size:
            raise InvalidRequest(f"record {seq} is not in a tree of size {size}")
        row = (await connection.execute(select(audit_records).where(audit_records.c.seq == seq))).first()
        if row is None:
            raise NotFound(f"record {seq} is missing from the ledger; run `corral audit verify`")
        tree = await corral.checkpointer.grow(connection, size)
        proof = tree.inclusion_proof(seq, size)
        root = tree.root(size)
    return {"record": _record(row), "seq": seq, "size": size, "root": root.hex(),
            "proof": [node.hex() for node in proof], "checkpoint": note}


@router.get("/audit/proof/consistency")
async def consistency_proof(request: Request, caller: Caller, old: Annotated[int, Query(alias="from", ge=0, le=2**62)],
                            new: Annotated[int | None, Query(alias="to", ge=0, le=2**62)] = None) -> dict[str, Any]:
    """Proof that the tree of size `to` (default: the latest checkpoint's) extends the one of
    size `from`."""
    caller.require("read", *READERS)
    corral = _state(request)
    async with corral.database.read() as connection:
        new, note = await _signed_size(connection, new)
        if old > new:
            raise InvalidRequest(f"no consistency proof from size {old} to the smaller size {new}")
        tree = await corral.checkpointer.grow(connection, new)
        proof = tree.consistency_proof(old, new)
        return {"from": old, "to": new, "old_root": tree.root(old).hex(), "root": tree.root(new).hex(),
                "proof": [node.hex() for node in proof], "checkpoint": note}


@router.get("/audit/export")
async def export(request: Request, caller: Caller,
                 since: Annotated[str | None, Query(description="RFC 3339 UTC time")] = None,
                 size: Seq | None = None) -> StreamingResponse:
    """JSON lines: first the signed checkpoint of `size` (default: the latest) and the verifier
    key, then every record since `since` in that tree with its inclusion proof, so each can be
    checked offline later."""
    caller.require("read", *READERS)
    corral = _state(request)
    async with corral.database.read() as connection:
        size, note = await _signed_size(connection, size)
        if note is None:
            raise InvalidRequest(f"no checkpoint was signed at size {size}; export at a checkpoint's size")
        tree = await corral.checkpointer.grow(connection, size)
    header = {"checkpoint": note, "key": str(corral.checkpointer.signer.verifier), "size": size}

    async def lines() -> AsyncIterator[str]:
        yield json.dumps(header) + "\n"
        after = -1
        while True:
            query = select(audit_records).where(audit_records.c.seq > after, audit_records.c.seq < size)
            if since:
                query = query.where(audit_records.c.time >= since.replace("+00:00", "Z"))
            async with corral.database.read() as connection:
                rows = list(await connection.execute(query.order_by(audit_records.c.seq).limit(5000)))
            if not rows:
                return
            for row in rows:
                proof = [node.hex() for node in tree.inclusion_proof(row.seq, size)]
                yield json.dumps({"record": _record(row), "size": size, "proof": proof}) + "\n"
            after = rows[-1].seq

    return StreamingResponse(lines(), media_type="application/x-ndjson")
