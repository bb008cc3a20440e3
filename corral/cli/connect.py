"""`corral connect CLIENT`: the policy compiled into an agent's own configuration for one person,
written as files to install (the server compiles, POST /api/v1/connect; this command only
writes). `corral connect --check FILE`: whether an installed file still matches the current
policy; exit 1 when it does not, so a fleet tool knows to push it again."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from corral.cli.client import ApiClient, CliError
from corral.cli.common import JsonFlag, api, err, out, print_json

CLIENTS = ("roo", "claude-code", "cline")
NAMES = {"roo": "Roo Code", "claude-code": "Claude Code", "cline": "Cline"}


def connect(
    client: Annotated[Optional[str], typer.Argument(help="roo, claude-code or cline.", show_default=False)] = None,
    user: Annotated[Optional[str], typer.Option(help="Whom for (admins may name anyone); default: you.")] = None,
    key: Annotated[Optional[str], typer.Option(help="A key of theirs to use instead of making a new one.")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Where to write the files (made if missing).")] = Path("."),
    roomodes: Annotated[bool, typer.Option("--roomodes", help="Roo Code: also .roomodes with the policy's modes.")] = False,
    url: Annotated[Optional[str], typer.Option(help="Corral's URL as the agent reaches it; default: CORRAL_URL.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace files that differ from what is written.")] = False,
    check: Annotated[Optional[Path], typer.Option("--check", help="Compare this installed file with the current "
                                                  "policy instead (exit 1 when it differs).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Write an agent's configuration compiled from the policy, with a personal key; or --check
    an installed file against the current policy."""
    if client is not None and client not in CLIENTS:
        raise CliError(f"unknown client {client!r}; clients are {', '.join(CLIENTS)}")
    if check is not None:
        _check(check, client, user, as_json)
        return
    if client is None:
        raise CliError("say which agent to connect (roo, claude-code or cline), or --check FILE")
    body: dict[str, Any] = {"client": client, "roomodes": roomodes}
    body.update({name: value for name, value in {"user": user, "key": key, "url": url}.items() if value is not None})
    connection = api()
    answer = connection.call("POST", "/connect", json=body)
    try:
        written = write_files(out_dir, answer["files"], force)
    except CliError:
        _take_back(connection, answer)
        raise
    if as_json:
        print_json({**answer, "files": [{**{k: v for k, v in f.items() if k != "content"}, "status": status}
                                        for f, status in written]})
        return
    _report(client, out_dir, answer, written)


def write_files(out_dir: Path, files: list[dict[str, Any]], force: bool) -> list[tuple[dict[str, Any], str]]:
    """Write every file (new, replaced or unchanged) with its mode; nothing at all when one
    would replace a different file without --force."""
    planned = []
    for file in files:
        path = out_dir / file["path"]
        try:
            existing = path.read_text(encoding="utf-8") if path.exists() else None
        except (OSError, UnicodeDecodeError) as error:
            raise CliError(f"cannot read {path}: {getattr(error, 'strerror', None) or error}") from None
        if existing is not None and existing != file["content"] and not force:
            raise CliError(f"{path} exists and differs from what connect writes; move it away or use --force")
        planned.append((file, path, "new" if existing is None else "unchanged" if existing == file["content"]
                        else "replaced"))
    for file, path, status in planned:
        _write(path, file["content"], int(file["mode"], 8))
    return [(file, status) for file, _, status in planned]


def _write(path: Path, content: str, mode: int) -> None:
    """Replace `path` whole, with `mode` from the moment it exists (a key is never readable by others)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            os.chmod(temporary, mode)  # mkstemp made it 0600; scripts need their execute bit
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                stream.write(content)
            os.replace(temporary, path)
        except BaseException:
            os.unlink(temporary)
            raise
    except OSError as error:
        raise CliError(f"cannot write {path}: {error.strerror or error}") from None


def _take_back(connection: ApiClient, answer: dict[str, Any]) -> None:
    """Revoke a key made for files that were not written, so no unused credential is left behind."""
    key = answer["key"]
    if not key["created"]:
        return
    try:
        connection.call("POST", f"/keys/{key['id']}/revoke")
    except CliError as error:
        err.print(f"the key made for it ({key['prefix']}) could not be revoked ({error}): "
                  f"`corral admin key revoke {key['id']}`", markup=False)
    else:
        out.print(f"nothing written; the key made for it ({key['prefix']}) was revoked again", markup=False)


def _report(client: str, out_dir: Path, answer: dict[str, Any], written: list[tuple[dict[str, Any], str]]) -> None:
    key = answer["key"]
    out.print(f"{NAMES[client]} for {answer['user']} from policy version {answer['policy_version']}, with "
              f"{'a new key' if key['created'] else 'key'} {key['prefix']} (id {key['id']}):", markup=False)
    for file, status in written:
        out.print(f"  {out_dir / file['path']} ({status}, mode {file['mode']}): {file['install']}", markup=False)
    if client == "roo":
        settings = (out_dir / "roo-settings.json").resolve()
        out.print(f"  VS Code settings.json: \"roo-cline.autoImportSettingsPath\": \"{settings}\"", markup=False)
    for step in answer["next"]:
        out.print(f"  {step}", markup=False)
    if answer["unexpressed"]:
        out.print(f"What {NAMES[client]}'s own configuration cannot say, and who enforces it instead:", markup=False)
        for line in answer["unexpressed"]:
            out.print(f"  - {line}", markup=False)


def _check(file: Path, client: str | None, user: str | None, as_json: bool) -> None:
    try:
        content = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise CliError(f"cannot read {file}: {getattr(error, 'strerror', None) or error}") from None
    body = {name: value for name, value in {"content": content, "path": str(file), "client": client,
                                             "user": user}.items() if value is not None}
    result = api().call("POST", "/connect/check", json=body)
    if as_json:
        print_json(result)
    elif result["current"]:
        out.print(f"{file}: up to date with policy version {result['policy_version']}", markup=False)
    else:
        out.print(f"{file} differs from what policy version {result['policy_version']} gives {result['user']}:",
                  markup=False)
        for line in result["differences"]:
            out.print(f"  - {line}", markup=False)
    if not result["current"]:
        raise typer.Exit(1)
