"""The `corral` command: `serve` runs the server; every other command talks to a running Corral
through its REST API (CORRAL_URL, CORRAL_KEY). Listings print a table, or JSON with --json."""

from __future__ import annotations

import logging
import sys
import time
from datetime import datetime, timezone
from typing import Annotated, Any, Optional

import typer

from corral.cli.client import ApiClient, CliError
from corral.cli.audit import audit_app
from corral.cli.policy import override_app, policy_app
from corral.cli.tools import approvals_app, mcp_app
from corral.cli.imports import import_app, ship
from corral.cli.metrics import metrics_app
from corral.cli.connect import connect
from corral.cli.common import DURATION, JsonFlag, cell, segment, api, err, out, parse_duration, print_json, print_table
from corral.errors import ConfigError
from corral.settings import load_settings

app = typer.Typer(help="Corral: the control plane for AI coding agents.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
admin_app = typer.Typer(help="Teams, users, roles and API keys.", no_args_is_help=True)
team_app = typer.Typer(help="Teams.", no_args_is_help=True)
user_app = typer.Typer(help="Users, their teams and roles.", no_args_is_help=True)
key_app = typer.Typer(help="Personal API keys.", no_args_is_help=True)
events_app = typer.Typer(help="The event log.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(admin_app, name="admin")
admin_app.add_typer(team_app, name="team")
admin_app.add_typer(user_app, name="user")
admin_app.add_typer(key_app, name="key")
app.add_typer(events_app, name="events")
app.add_typer(policy_app, name="policy")
app.add_typer(override_app, name="override")
app.add_typer(audit_app, name="audit")
app.add_typer(approvals_app, name="approvals")
app.add_typer(mcp_app, name="mcp")
app.add_typer(import_app, name="import")
app.command("ship")(ship)
app.add_typer(metrics_app, name="metrics")
app.command("connect")(connect)

# ---- server -------------------------------------------------------------------------------


@app.command()
def serve(
    demo: Annotated[bool, typer.Option(help="Seed a demo organisation to explore.")] = False,
    host: Annotated[Optional[str], typer.Option(help="Interface to listen on [CORRAL_HOST].")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port to listen on [CORRAL_PORT].")] = None,
) -> None:
    """Run Corral: migrate the database, make sure an admin exists, and serve HTTP."""
    import uvicorn

    from corral.api.app import create_app, prepare

    overrides = {name: value for name, value in {"host": host, "port": port}.items() if value is not None}
    settings = load_settings(**overrides)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per upstream call (with its URL) is noise
    started = time.perf_counter()
    new_key = prepare(settings, demo=demo)
    key_file = settings.data_dir / "admin.key"
    if new_key:
        out.print(f"\nAdmin key (shown once; also saved to {key_file} with mode 0600):\n\n  {new_key}\n")
    elif settings.admin_key is None:
        out.print(f"Admin key: in {key_file}")
    url = f"http://{settings.host}:{settings.port}"
    out.print(f"Corral {'demo ' if demo else ''}on {url} (database: {settings.resolved_database_url.split('://')[0]}, "
              f"prepared in {time.perf_counter() - started:.2f}s)")
    out.print(f"Try:  export CORRAL_URL={url} CORRAL_KEY=$(cat {key_file})  &&  corral whoami\n")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info",
                server_header=False, timeout_graceful_shutdown=10, backlog=4096,
                access_log=False)  # Corral writes its own (corral/api/middleware.py)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply database migrations (`serve` also does this at start)."""
    from corral.store.migrate import upgrade

    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import OperationalError

    settings = load_settings()
    try:
        upgrade(settings.resolved_database_url)
    except OperationalError as error:
        shown = make_url(settings.resolved_database_url).render_as_string(hide_password=True)
        raise CliError(f"cannot reach the database at {shown}: {str(error.orig).strip().splitlines()[0]}") from None
    out.print(f"database is up to date ({settings.resolved_database_url.split('://')[0]})")


@app.command()
def keygen() -> None:
    """Print a new random key, e.g. for CORRAL_ADMIN_KEY. Nothing is stored."""
    from corral.identity.tokens import generate_key

    out.print(generate_key())


# ---- identity -----------------------------------------------------------------------------


@app.command()
def whoami(as_json: JsonFlag = False) -> None:
    """Who the current CORRAL_KEY belongs to."""
    me = api().call("GET", "/whoami")
    if as_json:
        print_json(me)
        return
    out.print(f"{me['email']} ({me['organisation']})")
    out.print(f"  teams:  {cell(me['teams'])}")
    out.print(f"  roles:  {cell(me['roles'])}")
    out.print(f"  scopes: {cell(me['scopes'])}  (via {me['via']}{', key ' + str(me['key_id']) if me['key_id'] else ''})")


@team_app.command("create")
def team_create(name: str, description: Annotated[str, typer.Option(help="What the team does.")] = "",
                as_json: JsonFlag = False) -> None:
    """Create a team."""
    team = api().call("POST", "/teams", json={"name": name, "description": description})
    print_json(team) if as_json else out.print(f"created team {team['name']}")


@team_app.command("list")
def team_list(as_json: JsonFlag = False) -> None:
    """List teams."""
    teams = api().call("GET", "/teams")["teams"]
    print_json(teams) if as_json else print_table(teams, ["name", "members", "description"], "no teams yet")


@user_app.command("create")
def user_create(
    email: str,
    name: Annotated[str, typer.Option(help="Display name.")] = "",
    team: Annotated[Optional[list[str]], typer.Option(help="A team to join (repeatable).")] = None,
    role: Annotated[Optional[list[str]], typer.Option(help="A role (repeatable); default developer.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a user."""
    user = api().call("POST", "/users", json={"email": email, "name": name, "teams": team or [],
                                               "roles": role or ["developer"]})
    print_json(user) if as_json else out.print(
        f"created user {user['email']} (teams: {cell(user['teams'])}; roles: {cell(user['roles'])})")


@user_app.command("list")
def user_list(team: Annotated[Optional[str], typer.Option(help="Only this team's members.")] = None,
              as_json: JsonFlag = False) -> None:
    """List users."""
    users = api().call("GET", "/users", params={"team": team})["users"]
    print_json(users) if as_json else print_table(users, ["email", "name", "teams", "roles", "disabled"], "no users")


@user_app.command("grant")
def user_grant(
    email: str,
    role: Annotated[Optional[list[str]], typer.Option(help="A role to grant (repeatable).")] = None,
    team: Annotated[Optional[list[str]], typer.Option(help="A team to add the user to (repeatable).")] = None,
) -> None:
    """Grant roles to a user, or add them to teams."""
    if not role and not team:
        raise CliError("say what to grant: --role ROLE and/or --team TEAM")
    client = api()
    user: dict[str, Any] = {}
    for name in role or []:
        user = client.call("POST", f"/users/{segment(email)}/roles", json={"role": name})
    for name in team or []:
        user = client.call("POST", f"/users/{segment(email)}/teams", json={"team": name})
    out.print(f"{user['email']}: teams {cell(user['teams'])}; roles {cell(user['roles'])}")


@user_app.command("revoke-role")
def user_revoke_role(email: str, role: str) -> None:
    """Take a role away from a user."""
    user = api().call("DELETE", f"/users/{segment(email)}/roles/{segment(role)}")
    out.print(f"{user['email']}: roles {cell(user['roles'])}")


@user_app.command("remove-team")
def user_remove_team(email: str, team: str) -> None:
    """Take a user out of a team."""
    user = api().call("DELETE", f"/users/{segment(email)}/teams/{segment(team)}")
    out.print(f"{user['email']}: teams {cell(user['teams'])}")


@user_app.command("disable")
def user_disable(email: str) -> None:
    """Disable a user: their keys and tokens stop working at once."""
    user = api().call("PATCH", f"/users/{segment(email)}", json={"disabled": True})
    out.print(f"disabled {user['email']}")


@user_app.command("enable")
def user_enable(email: str) -> None:
    """Enable a disabled user again."""
    user = api().call("PATCH", f"/users/{segment(email)}", json={"disabled": False})
    out.print(f"enabled {user['email']}")


KEY_COLUMNS = ["id", "prefix", "user", "name", "scopes", "status", "expires_at", "last_used_at"]


@key_app.command("create")
def key_create(
    user: Annotated[str, typer.Option(help="The owner's email.")],
    name: Annotated[str, typer.Option(help="What the key is for.")] = "",
    scope: Annotated[Optional[list[str]], typer.Option(help="admin, gateway, ingest, read or policy (repeatable); "
                                                       "default gateway, ingest, read.")] = None,
    expires_in: Annotated[Optional[str], typer.Option(help="Lifetime: 90m, 12h, 30d, 2w.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the key.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Create a personal API key. The key is printed once, on the last line."""
    body: dict[str, Any] = {"user": user, "name": name}
    if scope:
        body["scopes"] = scope
    if expires_in:
        body["expires_at"] = (datetime.now(timezone.utc) + parse_duration(expires_in)).isoformat()
    created = api().call("POST", "/keys", json=body)
    if as_json:
        print_json(created)
    elif quiet:
        print(created["key"])
    else:
        out.print(f"created key {created['id']} for {created['user']} (scopes: {cell(created['scopes'])}; "
                  f"expires: {created['expires_at'] or 'never'}). It is shown only this once:")
        print(created["key"])


@key_app.command("list")
def key_list(
    user: Annotated[Optional[str], typer.Option(help="Only this user's keys.")] = None,
    all_keys: Annotated[bool, typer.Option("--all", help="Include revoked and expired keys.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """List API keys (never their secret part)."""
    keys = api().call("GET", "/keys", params={"user": user, "include_inactive": all_keys or None})["keys"]
    print_json(keys) if as_json else print_table(keys, KEY_COLUMNS, "no keys")


def resolve_key_id(client: ApiClient, key: str) -> int:
    """A key's id from its id or its display prefix (`ck_AbCd1234`)."""
    if key.isdigit():
        return int(key)
    if not key.startswith("ck_"):
        raise CliError(f"{key!r} is neither a key id nor a key prefix like ck_AbCd1234")
    prefix = key[:11]
    matches = [k for k in client.call("GET", "/keys", params={"include_inactive": True})["keys"]
               if k["prefix"] == prefix]
    if len(matches) != 1:
        raise CliError(f"{len(matches) or 'no'} keys have the prefix {prefix}; use the key id from `corral admin key list`")
    return int(matches[0]["id"])


@key_app.command("revoke")
def key_revoke(key: Annotated[str, typer.Argument(help="The key's id or prefix (ck_AbCd1234).")]) -> None:
    """Revoke a key: it stops working on the next request."""
    client = api()
    key_info = client.call("POST", f"/keys/{resolve_key_id(client, key)}/revoke")
    out.print(f"revoked key {key_info['id']} ({key_info['prefix']}) of {key_info['user']}")


@key_app.command("rotate")
def key_rotate(
    key: Annotated[str, typer.Argument(help="The key's id or prefix (ck_AbCd1234).")],
    grace: Annotated[str, typer.Option(help="How long the old key keeps working: 90m, 12h, 7d.")] = "1h",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the new key.")] = False,
) -> None:
    """Replace a key with a new one; the old one keeps working for the grace period."""
    seconds = int(parse_duration(grace).total_seconds())
    client = api()
    key_id = resolve_key_id(client, key)
    created = client.call("POST", f"/keys/{key_id}/rotate", json={"grace_seconds": seconds})
    if not quiet:
        out.print(f"key {key_id} rotated to key {created['id']}; the old key works for {grace} more. "
                  "The new key is shown only this once:")
    print(created["key"])


# ---- events -------------------------------------------------------------------------------


@events_app.command("list")
def events_list(
    kind: Annotated[Optional[str], typer.Option(help="Exact kind, or a prefix like 'admin.*'.")] = None,
    user: Annotated[Optional[str], typer.Option(help="Only this user's events.")] = None,
    team: Annotated[Optional[str], typer.Option(help="Only this team's events.")] = None,
    since: Annotated[Optional[str], typer.Option(help="ISO time, or a duration ago: 1h, 7d.")] = None,
    until: Annotated[Optional[str], typer.Option(help="ISO time, or a duration ago.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many, newest first.")] = 50,
    before: Annotated[Optional[int], typer.Option(help="Page cursor: the 'next' of a previous page.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List events, newest first."""
    params = {"kind": kind, "user": user, "team": team, "since": _when(since), "until": _when(until),
              "limit": limit, "before": before}
    page = api().call("GET", "/events", params=params)
    if as_json:
        print_json(page)
        return
    print_table(page["events"], ["id", "time", "kind", "user_email", "resource", "outcome", "attributes"],
                "no events match")
    if page["next"]:
        err.print(f"more: --before {page['next']}")


def _when(text: str | None) -> str | None:
    if text is None:
        return None
    if DURATION.match(text.strip().lower()):
        return (datetime.now(timezone.utc) - parse_duration(text)).isoformat()
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"{text!r} is neither an ISO time nor a duration like 1h or 7d") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).isoformat()


def main() -> None:
    try:
        app()
    except CliError as error:
        print(f"corral: {error}", file=sys.stderr)
        sys.exit(1)
    except ConfigError as error:
        print(f"corral: {error}", file=sys.stderr)
        sys.exit(2)
