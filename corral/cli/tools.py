"""`corral approvals ...` (held MCP tool calls) and `corral mcp ...` (the servers behind the MCP
gateway: status, pins, the contract and reliability check)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from corral.cli.common import JsonFlag, api, cell, out, print_json, print_table, segment

approvals_app = typer.Typer(help="Tool calls held for an approver's decision.", no_args_is_help=True)
mcp_app = typer.Typer(help="The MCP servers behind the gateway: status, pins, checks.", no_args_is_help=True)

APPROVAL_COLUMNS = ["id", "status", "requested_by", "server", "tool", "tool_class", "arguments", "expires_at"]
SERVER_COLUMNS = ["name", "transport", "status", "tools", "quarantined", "unpinned", "calls_last_hour", "error_rate",
                  "error"]


@approvals_app.command("list")
def approvals_list(status: Annotated[str, typer.Option(help="pending, approved, rejected, expired or all")] = "pending",
                   as_json: JsonFlag = False) -> None:
    """Held tool calls, newest first (pending ones by default)."""
    found = api().call("GET", "/approvals", params={"status": status})["approvals"]
    print_json(found) if as_json else print_table(found, APPROVAL_COLUMNS, f"no {status} approvals")


@approvals_app.command("show")
def approvals_show(approval_id: int, as_json: JsonFlag = False) -> None:
    """One held call: who, what tool, the arguments (secrets redacted), why it needs approval."""
    found = api().call("GET", f"/approvals/{approval_id}")
    if as_json:
        print_json(found)
        return
    for name in ("id", "status", "requested_by", "team", "server", "tool", "tool_class", "arguments", "rules",
                 "reason", "task_id", "mode", "created_at", "expires_at", "decided_by", "decided_at", "message"):
        out.print(f"{name:>13}: {cell(found.get(name))}", markup=False)


@approvals_app.command("approve")
def approvals_approve(approval_id: int, message: Annotated[str, typer.Option("--message", "-m")] = "") -> None:
    """Let a held call proceed (not your own)."""
    found = api().call("POST", f"/approvals/{approval_id}/approve", json={"message": message})
    out.print(f"approved {found['id']}: {found['server']}/{found['tool']} for {found['requested_by']}", markup=False)


@approvals_app.command("reject")
def approvals_reject(approval_id: int,
                     message: Annotated[str, typer.Option("--message", "-m", help="Why: the agent is told.")]) -> None:
    """Refuse a held call; the caller's agent gets your message."""
    found = api().call("POST", f"/approvals/{approval_id}/reject", json={"message": message})
    out.print(f"rejected {found['id']}: {found['server']}/{found['tool']} for {found['requested_by']}", markup=False)


@mcp_app.command("servers")
def mcp_servers(as_json: JsonFlag = False) -> None:
    """Every server: status, tool counts, quarantined and unpinned tools, the last hour's error rate."""
    found = api().call("GET", "/mcp/servers")["servers"]
    print_json(found) if as_json else print_table(found, SERVER_COLUMNS, "no MCP servers in the policy")


@mcp_app.command("pin")
def mcp_pin(server: str, tool: Annotated[Optional[list[str]], typer.Option("--tool", help="Only this tool (repeatable).")] = None) -> None:
    """Pin a server's tools as served now: later changes to them are quarantined until pinned again."""
    found = api().call("POST", f"/mcp/servers/{segment(server)}/pin", json={"tools": tool or []})
    out.print(f"{server}: pinned {cell(found['pinned'])}; unchanged {cell(found['unchanged'])}", markup=False)


@mcp_app.command("check")
def mcp_check(server: str, as_json: JsonFlag = False) -> None:
    """Connect, list the tools, compare with the pins, validate the input schemas, call the probe
    tool if configured. Exit 1 when a step fails."""
    found = api().call("POST", f"/mcp/servers/{segment(server)}/check")
    if as_json:
        print_json(found)
    else:
        for step in found["steps"]:
            mark = "pass" if step["passed"] else "FAIL"
            out.print(f"{mark}  {step['step']:<16} {step['latency_ms']:>8.1f} ms  {step['detail']}", markup=False)
        out.print(f"{server}: {'passed' if found['passed'] else 'FAILED'}", markup=False)
    if not found["passed"]:
        raise typer.Exit(1)
