"""`corral policy ...` and `corral override ...`: validate a policy file locally, move it through
the approval chain, add and remove overrides, and ask for decisions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from corral.cli.client import CliError
from corral.cli.common import JsonFlag, api, cell, err, out, parse_duration, print_json, print_table
from corral.policy.schema import ACTIONS, PolicyError, load_policy

policy_app = typer.Typer(help="The policy: validate, propose, approve, activate, decide.", no_args_is_help=True)
override_app = typer.Typer(help="Time-boxed overrides that tighten the policy during incidents.",
                           no_args_is_help=True)

Message = Annotated[str, typer.Option("--message", "-m", help="Why: it is part of the record.")]
VERSION_COLUMNS = ["version", "status", "author", "message", "created_at", "activated_by", "needs"]


def _read(file: Path) -> str:
    try:
        document = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise CliError(f"cannot read {file}: {getattr(error, 'strerror', None) or error}") from None
    try:
        load_policy(document, str(file))
    except PolicyError as error:
        for line in error.lines():
            err.print(line, markup=False)
        raise typer.Exit(1) from None
    return document


def _needs(version: dict[str, Any]) -> str:
    if version.get("missing"):
        return "; ".join(version["missing"])
    if version.get("reviews_needed"):
        return f"emergency: {version['reviews_needed']} more reviews"
    return "-"


def _report(version: dict[str, Any], verb: str) -> None:
    out.print(f"v{version['version']} {verb} ({version['status']})", markup=False)
    if version.get("changed_sections"):
        out.print(f"  changes: {', '.join(version['changed_sections'])}", markup=False)
    if version.get("missing"):
        out.print(f"  before it can be activated: {'; '.join(version['missing'])}", markup=False)
    elif version["status"] == "proposed":
        out.print(f"  ready: `corral policy activate {version['version']}`", markup=False)
    if version.get("reviews_needed"):
        out.print(f"  emergency change: {version['reviews_needed']} approvers must review it "
                  f"(`corral policy approve {version['version']}`)", markup=False)


@policy_app.command("validate")
def validate(file: Path) -> None:
    """Check a policy file; problems are printed as FILE:LINE:COL: message (exit 1)."""
    document = _read(file)
    policy = load_policy(document, str(file))
    out.print(f"{file}: valid ({len(policy.rules)} rules, {len(policy.profiles)} profiles, "
              f"{len(policy.modes)} modes, {len(policy.mcp_servers)} MCP servers)", markup=False)


@policy_app.command("show")
def show(version: Annotated[Optional[int], typer.Argument(help="A version; default: the active one.")] = None,
         diff: Annotated[bool, typer.Option("--diff", help="Show the diff against its base instead.")] = False,
         as_json: JsonFlag = False) -> None:
    """Print the active policy (or a version) as its author wrote it."""
    found = api().call("GET", "/policy" if version is None else f"/policy/versions/{version}")
    if as_json:
        print_json(found)
    elif diff:
        print(found.get("diff") or "(no changes)", end="")
    else:
        err.print(f"v{found['version']} ({found['status']}), by {found['author']}: {found['message']}", markup=False)
        print(found["document"], end="" if found["document"].endswith("\n") else "\n")


@policy_app.command("propose")
def propose(file: Path, message: Message) -> None:
    """Propose FILE as the next policy version; prints the diff against the active one."""
    document = _read(file)
    client = api()
    version = client.call("POST", "/policy/versions", json={"document": document, "message": message})
    _report(version, "proposed")
    print(client.call("GET", f"/policy/versions/{version['version']}")["diff"], end="")


@policy_app.command("approve")
def approve(version: int, message: Annotated[str, typer.Option("--message", "-m", help="A comment.")] = "") -> None:
    """Approve a proposal (or review an emergency activation)."""
    _report(api().call("POST", f"/policy/versions/{version}/approve", json={"comment": message}), "approved")


@policy_app.command("reject")
def reject(version: int, message: Message) -> None:
    """Reject a proposal (authors withdraw theirs the same way)."""
    _report(api().call("POST", f"/policy/versions/{version}/reject", json={"comment": message}), "rejected")


@policy_app.command("activate")
def activate(
    version: int,
    emergency: Annotated[bool, typer.Option("--emergency", help="Break glass (admins): skip the approvals; "
                                            "two approvers must review it afterwards.")] = False,
    message: Annotated[str, typer.Option("--message", "-m", help="Why (required with --emergency).")] = "",
) -> None:
    """Make an approved proposal the active policy."""
    if emergency and not message.strip():
        raise CliError("say why with -m: an emergency activation is reviewed after the fact")
    _report(api().call("POST", f"/policy/versions/{version}/activate",
                       json={"emergency": emergency, "message": message}), "activated")


@policy_app.command("history")
def history(limit: Annotated[int, typer.Option(min=1, max=1000)] = 20, as_json: JsonFlag = False) -> None:
    """Every version, newest first, with what each still needs."""
    versions = api().call("GET", "/policy/versions", params={"limit": limit})["versions"]
    if as_json:
        print_json(versions)
        return
    for version in versions:
        version["needs"] = _needs(version)
        if version["emergency"]:
            version["status"] += " (emergency)"
    print_table(versions, VERSION_COLUMNS, "no policy versions")


@policy_app.command("diff")
def diff(a: int, b: int) -> None:
    """The changes from version A to version B."""
    print(api().call("GET", "/policy/diff", params={"from": a, "to": b})["diff"] or "(no changes)", end="")


@policy_app.command("rollback")
def rollback(version: int, message: Message) -> None:
    """Propose an earlier version again; it goes through the same approvals."""
    _report(api().call("POST", f"/policy/versions/{version}/restore", json={"message": message}), "proposed")


def _ask(action: str, resource: str, user: str | None, mode: str | None, client: str | None,
         explain: bool) -> dict[str, Any]:
    if action not in ACTIONS:
        raise CliError(f"unknown action {action!r}; actions are {', '.join(ACTIONS)}")
    body = {"action": action, "resource": resource, "user": user, "mode": mode, "client": client, "explain": explain}
    return api().call("POST", "/decide", json={name: value for name, value in body.items() if value is not None})


DecideAs = Annotated[Optional[str], typer.Option("--as", help="Decide as this user (admins, auditors).")]
DecideAction = Annotated[str, typer.Option(help=f"One of {', '.join(ACTIONS)}.")]
DecideResource = Annotated[str, typer.Option(help="A command line, server/tool, profile, path or mode.")]
DecideMode = Annotated[Optional[str], typer.Option(help="The mode the agent is in (Roo Code).")]
DecideClient = Annotated[Optional[str], typer.Option(help="roo-code, cline, claude-code, ...")]


@policy_app.command("decide")
def decide(action: DecideAction, resource: DecideResource, user: DecideAs = None, mode: DecideMode = None,
           client: DecideClient = None, as_json: JsonFlag = False) -> None:
    """What the policy decides for an action, with the deciding rules and why."""
    decision = _ask(action, resource, user, mode, client, explain=False)
    if as_json:
        print_json(decision)
        return
    out.print(f"{decision['effect']}  ({cell(decision['rules'])})  {decision['reason']}", markup=False)
    for part in decision["parts"] if len(decision["parts"]) > 1 else []:
        out.print(f"  {part['effect']:8} {part['resource']}  ({cell(part['rules'])})", markup=False)
    if decision["obligations"]:
        out.print(f"  obligations: {json.dumps(decision['obligations'])}", markup=False)


@policy_app.command("explain")
def explain(action: DecideAction, resource: DecideResource, user: DecideAs = None, mode: DecideMode = None,
            client: DecideClient = None, as_json: JsonFlag = False) -> None:
    """Every rule considered for an action, and why each did or didn't match."""
    decision = _ask(action, resource, user, mode, client, explain=True)
    if as_json:
        print_json(decision)
        return
    rows = [{"rule": t["rule"], "effect": t["effect"], "matched": "yes" if t["matched"] else "no", "why": t["why"]}
            for t in decision["trace"]]
    print_table(rows, ["rule", "effect", "matched", "why"], "no rules for this action")
    out.print(f"=> {decision['effect']}  ({cell(decision['rules'])})  {decision['reason']}", markup=False)


# ---- overrides --------------------------------------------------------------------------------


def _param(text: str) -> tuple[str, Any]:
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise CliError(f"{text!r} is not NAME=VALUE (e.g. max_tokens=2000, denied_modes=code,debug)")
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw.split(",") if "," in raw else raw
    if name == "denied_modes" and isinstance(value, str):
        value = [value]
    return name, value


OVERRIDE_COLUMNS = ["id", "kind", "target", "params", "status", "expires_at", "created_by", "reason"]


@override_app.command("add")
def override_add(
    kind: Annotated[str, typer.Argument(help="switch_profile, limit_workload, tighten_approvals, scope_tasks, "
                                        "disable_tool, disable_server or read_only.")],
    target: Annotated[str, typer.Option(help="A profile, server, server/tool glob, or who: org, team:NAME, "
                                        "user:EMAIL.")],
    ttl: Annotated[str, typer.Option(help="How long it lasts: 30m, 2h, 1d (at most 7d).")],
    message: Message,
    param: Annotated[Optional[list[str]], typer.Option("--param", "-p", help="NAME=VALUE (repeatable): to, "
                     "max_tokens, concurrency, denied_modes, max_requests, max_cost_usd.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Add an override; it ends by itself when its time is up."""
    body = {"kind": kind, "target": target, "ttl_seconds": int(parse_duration(ttl).total_seconds()),
            "reason": message, "params": dict(_param(p) for p in param or [])}
    override = api().call("POST", "/overrides", json=body)
    if as_json:
        print_json(override)
    else:
        out.print(f"override {override['id']}: {override['kind']} for {override['target']} until "
                  f"{cell(override['expires_at'])} UTC", markup=False)


@override_app.command("list")
def override_list(all_overrides: Annotated[bool, typer.Option("--all", help="Include ended ones.")] = False,
                  as_json: JsonFlag = False) -> None:
    """The overrides in force (or all of them)."""
    found = api().call("GET", "/overrides", params={"include_ended": all_overrides or None})["overrides"]
    print_json(found) if as_json else print_table(found, OVERRIDE_COLUMNS, "no overrides in force")


@override_app.command("remove")
def override_remove(override_id: int) -> None:
    """End an override now."""
    override = api().call("DELETE", f"/overrides/{override_id}")
    out.print(f"removed override {override['id']} ({override['kind']} for {override['target']})", markup=False)
