"""REST for the MCP gateway's people: held tool calls (`/approvals`: list, show, approve,
reject) and the servers (`/mcp/servers`: status, pin, the contract and reliability check).

Approvers (role approver or admin, `policy`-scoped key) decide held calls, never their own;
others see only their own. Pinning is for admins; the check for admins and SREs."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import Field

from corral.api.auth import authenticate
from corral.api.bodies import Strict
from corral.errors import Forbidden
from corral.gateway.mcp import approvals
from corral.gateway.mcp.operators import check_server, pin_server, server_status
from corral.identity.access import Principal

router = APIRouter(tags=["mcp"])
Caller = Annotated[Principal, Depends(authenticate)]
ApprovalId = Annotated[int, Path(ge=1, le=2**31 - 1)]
ServerName = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9._-]{0,99}$")]
SEES_ALL = ("admin", "approver", "auditor")


class DecisionIn(Strict):
    message: str = Field("", max_length=2000)


class RejectionIn(Strict):
    message: str = Field(min_length=1, max_length=2000, description="why: the caller's agent is told")


class PinIn(Strict):
    tools: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=1000, description="the tools to pin; none: every tool the server serves")


@router.get("/approvals")
async def list_approvals(request: Request, caller: Caller,
                         status: Literal["pending", "approved", "used", "rejected", "expired", "all"] = "pending",
                         limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
    """Held tool calls, newest first (approvers, admins and auditors see everyone's)."""
    caller.require("read")
    only = None if caller.roles.intersection(SEES_ALL) else caller.email
    async with request.app.state.corral.database.read() as connection:
        found = await approvals.list_approvals(connection, None if status == "all" else status, limit, only)
    return {"approvals": found}


@router.get("/approvals/{approval_id}")
async def show_approval(request: Request, approval_id: ApprovalId, caller: Caller) -> dict[str, Any]:
    caller.require("read")
    async with request.app.state.corral.database.read() as connection:
        found = await approvals.get_approval(connection, approval_id)
    if found["requested_by"] != caller.email.lower() and not caller.roles.intersection(SEES_ALL):
        raise Forbidden("you may see only your own approvals")
    return found


async def _decide(request: Request, approval_id: int, caller: Principal, verdict: str, message: str) -> dict[str, Any]:
    corral = request.app.state.corral
    async with asyncio.timeout(30), corral.database.transaction() as connection:
        decided = await approvals.decide(connection, approval_id, caller, verdict, message)
    corral.mcp.waiters.wake(approval_id)
    return decided


@router.post("/approvals/{approval_id}/approve")
async def approve(request: Request, approval_id: ApprovalId, caller: Caller,
                  body: DecisionIn | None = None) -> dict[str, Any]:
    """Let a held call proceed (approvers and admins; not your own call)."""
    return await _decide(request, approval_id, caller, "approve", (body or DecisionIn()).message)


@router.post("/approvals/{approval_id}/reject")
async def reject(request: Request, approval_id: ApprovalId, body: RejectionIn, caller: Caller) -> dict[str, Any]:
    """Refuse a held call; the message reaches the caller's agent."""
    return await _decide(request, approval_id, caller, "reject", body.message)


@router.get("/mcp/servers")
async def servers(request: Request, caller: Caller) -> dict[str, Any]:
    """Every MCP server in the policy: status, tool counts, quarantined tools, recent error rate."""
    caller.require("read")
    corral = request.app.state.corral
    return {"servers": await server_status(corral.mcp, await corral.policy.current(), corral.database)}


@router.post("/mcp/servers/{name}/pin")
async def pin(request: Request, name: ServerName, caller: Caller, body: PinIn | None = None) -> dict[str, Any]:
    """Pin a server's tools as they are served now: the contract later definitions are held to."""
    caller.require("admin", "admin")
    corral = request.app.state.corral
    return await pin_server(corral.mcp, await corral.policy.current(), corral.database, name,
                            (body or PinIn()).tools, caller)


@router.post("/mcp/servers/{name}/check")
async def check(request: Request, name: ServerName, caller: Caller) -> dict[str, Any]:
    """Connect afresh, list the tools, compare them with their pins, validate their input
    schemas and call the probe tool if one is configured."""
    caller.require("read", "admin", "sre")
    corral = request.app.state.corral
    return await check_server(corral.mcp, await corral.policy.current(), corral.database, name)
