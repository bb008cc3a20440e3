"""The first administrator. On start Corral makes sure an admin user and an admin key exist:
the key from CORRAL_ADMIN_KEY when set (any earlier bootstrap key is revoked, so changing the
variable rotates it), otherwise a generated one that is returned once for printing and written to
`<data dir>/admin.key` with mode 0600. Only its hash goes into the database.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import select, update

from corral.errors import ConfigError
from corral.events.model import utcnow
from corral.identity import tokens
from corral.identity.directory import admin_event, create_user, ensure_organisation, grant_role
from corral.identity.keys import create_key
from corral.store.database import Database
from corral.store.tables import api_keys, organisations, users

ADMIN_EMAIL = "admin@corral.local"


def write_secret_file(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(content + "\n")
    path.chmod(0o600)


async def ensure_admin(database: Database, data_dir: Path, org_name: str, admin_key: str | None) -> str | None:
    """Make sure the bootstrap admin can log in; return a newly generated key, else None."""
    async with database.transaction() as connection:
        await database.lock_for_startup(connection)
        org_id = await ensure_organisation(connection, org_name)
        await connection.execute(update(organisations).where(organisations.c.id == org_id).values(name=org_name))
        admin = (await connection.execute(select(users.c.id).where(users.c.email == ADMIN_EMAIL))).first()
        if admin is None:
            await create_user(connection, None, ADMIN_EMAIL, name="Corral administrator", roles=("admin",))
        else:
            await grant_role(connection, None, ADMIN_EMAIL, "admin")
        active = list(await connection.execute(
            select(api_keys.c.id, api_keys.c.key_hash, api_keys.c.revoked_at, api_keys.c.expires_at,
                   api_keys.c.replaced_by).where(api_keys.c.bootstrap.is_(True))))
        if admin_key is not None:
            wanted = tokens.hash_key(admin_key)
            now = utcnow()
            if any(row.key_hash == wanted and (row.revoked_at is not None or row.replaced_by is not None
                                               or (row.expires_at is not None and row.expires_at <= now))
                   for row in active):
                raise ConfigError("CORRAL_ADMIN_KEY holds a key that was revoked, rotated or has expired; "
                                  "generate a new one with `corral keygen`")
            for row in active:
                if row.key_hash != wanted and row.revoked_at is None:
                    await connection.execute(
                        update(api_keys).where(api_keys.c.id == row.id).values(revoked_at=utcnow()))
                    await admin_event(connection, None, "admin.key.revoked", f"key:{row.id}",
                                      reason="CORRAL_ADMIN_KEY changed")
            if not any(row.key_hash == wanted for row in active):
                await create_key(connection, None, ADMIN_EMAIL, name="bootstrap (CORRAL_ADMIN_KEY)",
                                 scopes=frozenset({"admin"}), plaintext=admin_key, bootstrap=True)
            return None
        if any(row.revoked_at is None and (row.expires_at is None or row.expires_at > utcnow()) for row in active):
            return None
        plaintext, _ = await create_key(connection, None, ADMIN_EMAIL, name="bootstrap",
                                        scopes=frozenset({"admin"}), bootstrap=True)
        write_secret_file(data_dir / "admin.key", plaintext)  # before commit: no key nobody holds
    return plaintext
