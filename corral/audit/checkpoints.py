"""Signed checkpoints of the ledger: the signing key, and the checkpointer that signs a new tree
head at most every `interval` seconds while records arrive. Before signing it rebuilds the new
leaves from their records and proves the new tree extends the last signed one, so Corral never
signs two checkpoints that are inconsistent with each other, nor a tree over altered records.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from sqlalchemy import insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from corral.audit.ledger import stored_records
from corral.audit.merkle import MerkleTree, verify_consistency
from corral.audit.note import Checkpoint, NoteError, Signer
from corral.audit.records import checked_leaf_hashes
from corral.errors import Unavailable
from corral.events.model import utcnow
from corral.store.database import Database
from corral.store.tables import audit_checkpoints, audit_head, audit_keys

log = logging.getLogger("corral.audit")
CHECKPOINT_LOCK_ID = 0x61756469  # "audi": one checkpointer at a time across replicas
KEY_FILE = "signing.key"


class LedgerCorrupt(Unavailable):
    """The stored ledger does not match what was signed: nothing more is signed or proved until
    a person looks (`corral audit verify` names the record)."""

    def __init__(self, message: str) -> None:
        super().__init__(f"the audit ledger is damaged: {message}; run `corral audit verify`")


def load_signer(configured: str | None, data_dir: Path, origin: str) -> Signer:
    """The key from CORRAL_SIGNING_KEY, else the one in the data dir, else a new one written
    there with mode 0600. Its name is the log's origin."""
    if configured:
        signer = Signer.parse(configured)
        if signer.name != origin:
            raise NoteError(f"the signing key is named {signer.name!r}, but the log's origin is {origin!r}")
        return signer
    path = data_dir / KEY_FILE
    if path.exists():
        signer = Signer.parse(path.read_text())
        if signer.name != origin:
            raise NoteError(f"{path} holds a key named {signer.name!r}, but the log's origin is {origin!r}")
        return signer
    signer = Signer.generate(origin)
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(str(signer) + "\n")
    return signer


async def pin_key(connection: AsyncConnection, signer: Signer) -> None:
    """The first start records its verifier key; a later start (or another replica) with a
    different key is refused, since its checkpoints would not verify with the published key."""
    pinned = (await connection.execute(select(audit_keys.c.verifier_key).where(audit_keys.c.id == 1))).scalar()
    ours = str(signer.verifier)
    if pinned is None:
        await connection.execute(insert(audit_keys).values(id=1, verifier_key=ours, created_at=utcnow()))
    elif pinned != ours:
        raise NoteError(f"this database's audit log is signed by {pinned}; give every replica that key in "
                        "CORRAL_SIGNING_KEY (or the signing.key it was made with)")


class Checkpointer:
    def __init__(self, database: Database, signer: Signer, interval: float) -> None:
        self._database = database
        self._signer = signer
        self._interval = interval
        self._tree = MerkleTree()  # this process's copy, grown from the stored records
        self._growing = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    @property
    def tree(self) -> MerkleTree:
        return self._tree

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="corral-audit-checkpointer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                async with asyncio.timeout(max(60.0, self._interval * 6)):
                    await self.checkpoint()
            except LedgerCorrupt as error:
                log.critical("the audit ledger no longer matches its last checkpoint; not signing: %s", error)
            except Exception:  # retried next time: checkpoints must never stop the server
                log.exception("signing an audit checkpoint failed")
            await asyncio.sleep(self._interval)

    @property
    def signer(self) -> Signer:
        return self._signer

    async def grow(self, connection: AsyncConnection, size: int) -> MerkleTree:
        """Bring this process's tree up to `size` leaves, each rebuilt from its record."""
        async with self._growing:
            await self._grow(connection, size)
        return self._tree

    async def _grow(self, connection: AsyncConnection, size: int) -> None:
        async for rows in stored_records(connection, self._tree.size):
            leaves: list[bytes] = []
            problem = checked_leaf_hashes(rows[:size - self._tree.size], self._tree.size, leaves)
            for leaf in leaves:
                self._tree.append(leaf)
            if problem is not None:
                raise LedgerCorrupt(problem[0])
            if self._tree.size >= size:
                return

    async def checkpoint(self) -> str | None:
        """Sign the current tree head if the ledger grew since the last checkpoint; return the
        signed note, or None when there was nothing new."""
        async with self._database.read() as connection:  # catching up outside the write lock
            await self.grow(connection, (await connection.execute(
                select(audit_head.c.size).where(audit_head.c.id == 1))).scalar_one())
        async with self._database.transaction() as connection:
            if connection.dialect.name == "postgresql":
                await connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": CHECKPOINT_LOCK_ID})
            size = (await connection.execute(select(audit_head.c.size).where(audit_head.c.id == 1))).scalar_one()
            last = (await connection.execute(
                select(audit_checkpoints).order_by(audit_checkpoints.c.size.desc()).limit(1))).first()
            if size == 0 or (last is not None and last.size >= size):
                return None
            await self.grow(connection, size)
            if self._tree.size < size:
                raise LedgerCorrupt(f"the head says {size} records, only {self._tree.size} are stored")
            root = self._tree.root(size)
            if last is not None:
                old_root = bytes.fromhex(last.root)
                proof = self._tree.consistency_proof(last.size, size)
                if not verify_consistency(last.size, size, old_root, root, proof):
                    raise LedgerCorrupt(f"the tree of size {size} does not extend the checkpoint of size {last.size}")
            note = self._signer.sign(Checkpoint(self._signer.name, size, root).text())
            await connection.execute(insert(audit_checkpoints).values(
                size=size, root=root.hex(), note=note, created_at=utcnow()))
            return note
