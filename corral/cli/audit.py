"""`corral audit ...`: list records, print the signed checkpoint, get proofs, check a proof
offline, and verify the whole ledger on this machine: every leaf is rebuilt from its record and
the tree from the leaves, so the check does not rest on the server's arithmetic."""

from __future__ import annotations

import json
import sys
from operator import itemgetter
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.progress import Progress

from corral.audit.merkle import MerkleTree, leaf_hash, verify_consistency, verify_inclusion
from corral.audit.note import Checkpoint, NoteError, Verifier, open_note
from corral.audit.records import AuditRecord, checked_leaf_hashes
from corral.cli.client import ApiClient, CliError
from corral.cli.common import JsonFlag, api, err, out, print_json, print_table
from corral.errors import ConfigError

audit_app = typer.Typer(help="The tamper-evident audit ledger: verify it, prove records, list them.",
                        no_args_is_help=True)
PAGE = 10_000
KeyOption = Annotated[Optional[str], typer.Option("--key", help="The verifier key to trust (name+id+base64); "
                                                  "default: the one the server publishes.")]


def record_from(data: dict[str, Any]) -> AuditRecord:
    fields = ("seq", "time", "actor", "action", "resource", "decision", "outcome", "payload_sha256")
    try:
        return AuditRecord(**{name: data[name] for name in fields})
    except (KeyError, TypeError, ValueError) as error:
        raise CliError(f"not an audit record: {error}") from None


def _verifier(client: ApiClient | None, key: str | None) -> Verifier:
    try:
        if key:
            return Verifier.parse(Path(key).read_text() if Path(key).is_file() else key)
        assert client is not None
        return Verifier.parse(client.call("GET", "/audit/public-key")["key"])
    except NoteError as error:
        raise CliError(f"bad verifier key: {error}") from None


def _open_checkpoint(note: str, verifier: Verifier, where: str) -> Checkpoint:
    try:
        return Checkpoint.parse(open_note(note, [verifier]))
    except NoteError as error:
        raise CliError(f"{where}: {error}") from None


@audit_app.command("checkpoint")
def checkpoint() -> None:
    """Print the latest signed checkpoint."""
    print(api().call_text("GET", "/audit/checkpoint"), end="")


@audit_app.command("list")
def list_records(
    actor: Annotated[Optional[str], typer.Option(help="Only this actor's records.")] = None,
    action: Annotated[Optional[str], typer.Option(help="Exact, or a prefix like 'policy.*'.")] = None,
    since: Annotated[Optional[str], typer.Option(help="RFC 3339 UTC time, e.g. 2026-11-26T00:00:00Z.")] = None,
    after: Annotated[int, typer.Option(help="Records after this sequence number.")] = -1,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    as_json: JsonFlag = False,
) -> None:
    """List records in sequence order."""
    page = api().call("GET", "/audit/records", params={"actor": actor, "action": action, "since": since,
                                                        "after": after, "limit": limit})
    if as_json:
        print_json(page["records"])
        return
    print_table(page["records"], ["seq", "time", "actor", "action", "resource", "decision", "outcome"],
                "no records match")
    if page["next"] is not None:
        err.print(f"more: --after {page['next']}")


@audit_app.command("export")
def export(since: Annotated[Optional[str], typer.Option(help="RFC 3339 UTC time, e.g. 2026-11-01T00:00:00Z.")] = None,
           size: Annotated[Optional[int], typer.Option(help="A checkpoint's size; default: the latest.")] = None) -> None:
    """Write JSON lines to stdout: the signed checkpoint and key, then each record with the
    inclusion proof that ties it to that checkpoint (`check-proof` takes any record line)."""
    for line in api().stream_lines("GET", "/audit/export", params={"since": since, "size": size}):
        print(line)


@audit_app.command("proof")
def proof(seq: int, size: Annotated[Optional[int], typer.Option(help="Tree size; default: the latest "
                                                                "checkpoint's.")] = None) -> None:
    """Print an inclusion proof for record SEQ as JSON (with its record and checkpoint)."""
    print_json(api().call("GET", "/audit/proof/inclusion", params={"seq": seq, "size": size}))


@audit_app.command("check-proof")
def check_proof(
    file: Annotated[Path, typer.Argument(help="A proof from `corral audit proof` (- for stdin).")],
    checkpoint_file: Annotated[Path, typer.Option("--checkpoint", help="A signed checkpoint.")],
    key: Annotated[str, typer.Option("--key", help="The verifier key (or a file holding it).")],
) -> None:
    """Verify an inclusion proof offline: no server, no database."""
    try:
        data = json.loads(sys.stdin.read() if str(file) == "-" else file.read_text())
        note = checkpoint_file.read_text()
    except (OSError, ValueError) as error:
        raise CliError(f"cannot read the proof or the checkpoint: {error}") from None
    signed = _open_checkpoint(note, _verifier(None, key), str(checkpoint_file))
    record = record_from(data.get("record", {}))
    nodes = [bytes.fromhex(node) for node in data.get("proof", [])]
    if data.get("size") != signed.size:
        raise CliError(f"the proof is for a tree of size {data.get('size')}, the checkpoint is of size {signed.size}")
    if not verify_inclusion(leaf_hash(record.leaf()), record.seq, signed.size, nodes, signed.root):
        raise CliError(f"the proof does NOT show record {record.seq} in the checkpointed tree")
    out.print(f"proof verified: record {record.seq} ({record.action} by {record.actor}) is in {signed.origin} "
              f"of size {signed.size}, root {signed.root.hex()}", markup=False)


@audit_app.command("verify")
def verify(
    from_checkpoint: Annotated[Optional[Path], typer.Option(help="A checkpoint kept elsewhere: the ledger must "
                                                            "still extend it.")] = None,
    key: KeyOption = None,
    database: Annotated[Optional[str], typer.Option(
        "--database", help="Read the ledger straight from this database URL (a replica, a restored backup) "
        "instead of through the API: the fastest check of a large ledger, on every core.")] = None,
) -> None:
    """Rebuild every leaf and the tree from the stored records, check every signed checkpoint
    against it, and (optionally) an external checkpoint. Exit 1 naming the first problem."""
    tree, notes, verifier = _from_database(database, key) if database else _from_api(key)
    previous: Checkpoint | None = None
    for size, note in notes:
        signed = _open_checkpoint(note, verifier, f"checkpoint of size {size}")
        _check_against(tree, signed, previous, "stored checkpoint")
        previous = signed
    if from_checkpoint is not None:
        try:
            note = from_checkpoint.read_text()
        except OSError as error:
            raise CliError(f"cannot read {from_checkpoint}: {error.strerror}") from None
        _check_against(tree, _open_checkpoint(note, verifier, str(from_checkpoint)), None, str(from_checkpoint))
    out.print(f"verified {tree.size} records, root {tree.root().hex()}", markup=False)


def _from_api(key: str | None) -> tuple[MerkleTree, list[tuple[int, str]], Verifier]:
    """The tree rebuilt from the records the API serves, page by page, and the checkpoints."""
    client = api()
    verifier = _verifier(client, key)
    leaves: list[bytes] = []
    page = client.call("GET", "/audit/records", params={"after": -1, "limit": PAGE})
    total = page["size"]
    with Progress(transient=True, console=err, disable=not err.is_terminal) as progress:
        task = progress.add_task("verifying", total=total)
        while True:
            try:
                rows = [_STORED(data) for data in page["records"]]
            except (KeyError, TypeError) as error:
                raise CliError(f"not an audit record: {error}") from None
            problem = checked_leaf_hashes(rows, len(leaves), leaves)
            if problem is not None:
                _fail(problem[0])
            progress.update(task, completed=len(leaves))
            if page["next"] is None:
                break
            page = client.call("GET", "/audit/records", params={"after": page["next"], "limit": PAGE})
    tree = MerkleTree.from_leaves(leaves)
    if tree.size < total:
        _fail(f"the ledger's head says {total} records; {tree.size} are stored")
    checkpoints = client.call("GET", "/audit/checkpoints", params={"limit": 10_000})["checkpoints"]
    return tree, [(row["size"], row["note"]) for row in checkpoints], verifier


_STORED = itemgetter("seq", "time", "actor", "action", "resource", "decision", "outcome", "payload_sha256",
                     "leaf_hash")


def _from_database(url: str, key: str | None) -> tuple[MerkleTree, list[tuple[int, str]], Verifier]:
    """The tree rebuilt from the database's own rows, and the checkpoints stored beside them.
    Without --key, the verifier key is the one pinned in that database (and is printed)."""
    # Only this command reads a database: the rest of the CLI starts without SQLAlchemy.
    from sqlalchemy import create_engine, select
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError
    from sqlalchemy.pool import NullPool

    from corral.audit.ledger import verify_database
    from corral.store.database import sync_url
    from corral.store.tables import audit_checkpoints, audit_keys
    try:
        verification, tree = verify_database(url)
        engine = create_engine(sync_url(url), poolclass=NullPool)
        try:
            with engine.connect() as connection:
                notes = [(row.size, row.note) for row in connection.execute(
                    select(audit_checkpoints.c.size, audit_checkpoints.c.note).order_by(audit_checkpoints.c.size))]
                pinned = connection.execute(select(audit_keys.c.verifier_key)).scalar()
        finally:
            engine.dispose()
    except (SQLAlchemyError, ConfigError, ArgumentError) as error:
        raise CliError(f"cannot read the ledger from --database: {_without_secrets(error)}") from None
    if verification.problem is not None:
        _fail(verification.problem)
    if key is None:
        if pinned is None:
            raise CliError("this database has no pinned verifier key; pass --key")
        err.print(f"checking checkpoints with the key pinned in this database: {pinned} (pass --key to use "
                  "one kept elsewhere)", markup=False)
    return tree, notes, _verifier(None, key or pinned)


def _without_secrets(error: Exception) -> str:
    """The first line of a driver error, which names the problem but never the URL's password."""
    message = str(getattr(error, "orig", None) or error).strip().splitlines()
    return message[0] if message else type(error).__name__


def _check_against(tree: MerkleTree, signed: Checkpoint, previous: Checkpoint | None, what: str) -> None:
    if signed.size > tree.size:
        _fail(f"the {what} covers {signed.size} records but only {tree.size} are stored: records were removed")
    if tree.root(signed.size) != signed.root:
        after = previous.size if previous else 0
        _fail(f"the {what} of size {signed.size} does not match the records: a record between {after} and "
              f"{signed.size - 1} was changed after it was signed")
    if previous is not None and not verify_consistency(previous.size, signed.size, previous.root, signed.root,
                                                       tree.consistency_proof(previous.size, signed.size)):
        _fail(f"the checkpoints of sizes {previous.size} and {signed.size} are inconsistent")


def _fail(message: str) -> None:
    raise CliError(f"verification FAILED: {message}")
