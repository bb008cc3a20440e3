"""Personal API keys in the database: create, list, revoke, rotate, and authenticate.

Only a key's SHA-256 and a short display prefix are stored; the plaintext exists once, in the
answer to `create_key`/`rotate_key`. A key is active while it is neither revoked nor expired and
its user is not disabled. `KeyCache` keeps a key's answer for a moment (CORRAL_KEY_CACHE_SECONDS,
2 s by default, 0 to check the database on every request): the replica where a change is made
forgets at once; other replicas see it within that moment.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from corral.errors import Conflict, InvalidRequest, NotFound, Unauthenticated
from corral.events.model import utcnow
from corral.identity import tokens
from corral.identity.access import DEFAULT_KEY_SCOPES, Principal, parse_scopes
from corral.identity.directory import admin_event, get_user, normalise_email
from corral.store.database import Database
from corral.store.tables import api_keys, users

log = logging.getLogger("corral.identity")
LAST_USED_RESOLUTION = timedelta(seconds=60)  # write last_used_at at most this often per key
MAX_GRACE = timedelta(days=30)


@dataclass(frozen=True)
class KeyInfo:
    id: int
    user_email: str
    name: str
    prefix: str
    scopes: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    replaced_by: int | None

    def status(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


def _info(row: object) -> KeyInfo:
    return KeyInfo(
        id=row.id, user_email=row.email, name=row.name, prefix=row.prefix,
        scopes=tuple(sorted(row.scopes.split())), created_at=row.created_at, expires_at=row.expires_at,
        revoked_at=row.revoked_at, last_used_at=row.last_used_at, replaced_by=row.replaced_by,
    )


_KEY_COLUMNS = select(api_keys, users.c.email).join(users, users.c.id == api_keys.c.user_id)


async def get_key(connection: AsyncConnection, key_id: int) -> KeyInfo:
    row = (await connection.execute(_KEY_COLUMNS.where(api_keys.c.id == key_id))).first()
    if row is None:
        raise NotFound(f"no key with id {key_id}; `corral admin key list` shows the keys")
    return _info(row)


async def create_key(
    connection: AsyncConnection,
    actor: Principal | None,
    user_email: str,
    *,
    name: str = "",
    scopes: frozenset[str] = DEFAULT_KEY_SCOPES,
    expires_at: datetime | None = None,
    plaintext: str | None = None,
    bootstrap: bool = False,
) -> tuple[str, KeyInfo]:
    """Create a key for `user_email`; return the plaintext (shown once) and its record."""
    scopes = parse_scopes(scopes)
    user = await get_user(connection, user_email)
    if user.disabled:
        raise Conflict(f"{user.email} is disabled; enable the user before giving them a key")
    if "admin" in scopes and "admin" not in user.roles:
        raise InvalidRequest(f"{user.email} does not have the admin role, so their key cannot have the admin scope")
    now = utcnow()
    if expires_at is not None and expires_at <= now:
        raise InvalidRequest("the expiry must be in the future")
    key = plaintext or tokens.generate_key()
    result = await connection.execute(
        insert(api_keys).values(
            user_id=user.id, name=name, prefix=tokens.display_prefix(key), key_hash=tokens.hash_key(key),
            scopes=" ".join(sorted(scopes)), bootstrap=bootstrap, created_at=now, expires_at=expires_at,
        )
    )
    key_id = result.inserted_primary_key[0]
    await admin_event(connection, actor, "admin.key.created", f"key:{key_id}", user=user.email,
                      prefix=tokens.display_prefix(key), scopes=sorted(scopes),
                      expires_at=expires_at.isoformat() if expires_at else None)
    return key, await get_key(connection, key_id)


async def list_keys(
    connection: AsyncConnection, user_email: str | None = None, include_inactive: bool = False
) -> list[KeyInfo]:
    query = _KEY_COLUMNS.order_by(api_keys.c.id)
    if user_email is not None:
        query = query.where(users.c.email == normalise_email(user_email))
    if not include_inactive:
        now = utcnow()
        query = query.where(api_keys.c.revoked_at.is_(None),
                            or_(api_keys.c.expires_at.is_(None), api_keys.c.expires_at > now))
    return [_info(row) for row in await connection.execute(query)]


async def revoke_key(connection: AsyncConnection, actor: Principal | None, key_id: int) -> KeyInfo:
    key = await get_key(connection, key_id)
    revoked = await connection.execute(
        update(api_keys).where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None)).values(revoked_at=utcnow()))
    if revoked.rowcount == 0:  # someone else revoked it first
        key = await get_key(connection, key_id)
        raise Conflict(f"key {key_id} ({key.prefix}) was already revoked at {key.revoked_at.isoformat()}")
    await admin_event(connection, actor, "admin.key.revoked", f"key:{key_id}", user=key.user_email, prefix=key.prefix)
    return await get_key(connection, key_id)


async def rotate_key(
    connection: AsyncConnection, actor: Principal | None, key_id: int, grace: timedelta
) -> tuple[str, KeyInfo]:
    """A new key with the same owner, name, scopes and expiry; the old one keeps working for
    `grace` (at most MAX_GRACE), then expires."""
    if grace < timedelta(0) or grace > MAX_GRACE:
        raise InvalidRequest(f"the grace period must be between 0 and {MAX_GRACE.days} days")
    old = await get_key(connection, key_id)
    now = utcnow()
    if old.status(now) != "active":
        raise Conflict(f"key {key_id} ({old.prefix}) is {old.status(now)}; only an active key can be rotated")
    if old.replaced_by is not None:
        raise Conflict(f"key {key_id} was already rotated (to key {old.replaced_by})")
    plaintext, new = await create_key(
        connection, actor, old.user_email, name=old.name, scopes=frozenset(old.scopes), expires_at=old.expires_at
    )
    old_ends = now + grace if old.expires_at is None else min(old.expires_at, now + grace)
    # Conditional, so that of two concurrent rotations only one wins (the other rolls back).
    replaced = await connection.execute(
        update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c.replaced_by.is_(None), api_keys.c.revoked_at.is_(None))
        .values(expires_at=old_ends, replaced_by=new.id))
    if replaced.rowcount == 0:
        raise Conflict(f"key {key_id} was rotated or revoked at the same time; list the keys and try again")
    await admin_event(connection, actor, "admin.key.rotated", f"key:{key_id}", user=old.user_email,
                      replaced_by=new.id, old_key_expires_at=old_ends.isoformat())
    return plaintext, new


class KeyCache:
    """Recently authenticated keys, by hash, each until `ttl_s` passes or the key expires; only
    successes are kept. `clear()` after any change to keys, users or teams."""

    def __init__(self, ttl_s: float, max_entries: int = 50_000) -> None:
        self._ttl_s = ttl_s
        self._max = max_entries
        self._entries: dict[str, tuple[float, Principal]] = {}
        self.looking_up: dict[str, asyncio.Future[Principal]] = {}  # one database lookup per key at a time
        self.generation = 0  # moves on every clear(): a lookup begun before a change does not keep its answer

    def get(self, key_hash: str) -> Principal | None:
        found = self._entries.get(key_hash)
        if found is None:
            return None
        if found[0] <= time.monotonic():
            self._entries.pop(key_hash, None)
            return None
        return found[1]

    def put(self, key_hash: str, principal: Principal, key_expires: datetime | None, generation: int) -> None:
        if self._ttl_s <= 0 or generation != self.generation:
            return
        until = time.monotonic() + self._ttl_s
        if key_expires is not None:
            until = min(until, time.monotonic() + (key_expires - utcnow()).total_seconds())
        if len(self._entries) >= self._max:
            self._entries.clear()
        self._entries[key_hash] = (until, principal)

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()


async def authenticate_key(database: Database, key: str, cache: KeyCache | None = None) -> Principal:
    """The Principal behind `key`, or Unauthenticated with a reason the holder can act on."""
    if not tokens.is_well_formed(key):
        raise Unauthenticated("malformed API key: a Corral key looks like ck_ followed by 49 letters and digits")
    key_hash = tokens.hash_key(key)
    if cache is None:
        return await _look_up(database, key_hash, None)
    known = cache.get(key_hash)
    if known is not None:
        return known
    pending = cache.looking_up.get(key_hash)
    if pending is not None:  # the same key's lookup is under way: share its answer
        try:
            return await asyncio.shield(pending)
        except asyncio.CancelledError:
            if not pending.cancelled():
                raise  # this request itself was cancelled
    leader: asyncio.Future[Principal] = asyncio.get_running_loop().create_future()
    cache.looking_up[key_hash] = leader
    try:
        principal = await _look_up(database, key_hash, cache)
    except BaseException as error:
        if isinstance(error, Exception):
            leader.set_exception(error)
            leader.exception()  # retrieved: nobody may be waiting
        else:
            leader.cancel()
        raise
    finally:
        cache.looking_up.pop(key_hash, None)
    leader.set_result(principal)
    return principal


_TOUCHING: set[asyncio.Task[None]] = set()


async def _touch(database: Database, key_id: int, now: datetime) -> None:
    """Note when a key was last used (a write, so not on the request's path)."""
    try:
        async with asyncio.timeout(30), database.transaction() as connection:
            await connection.execute(update(api_keys).where(api_keys.c.id == key_id).values(last_used_at=now))
    except Exception:  # a lost last-used time is not worth failing a request over
        log.warning("could not record when key %d was last used", key_id, exc_info=True)


async def _look_up(database: Database, key_hash: str, cache: KeyCache | None) -> Principal:
    generation = cache.generation if cache is not None else 0
    async with database.read() as connection:
        row = (await connection.execute(
            select(api_keys, users.c.email, users.c.disabled_at)
            .join(users, users.c.id == api_keys.c.user_id)
            .where(api_keys.c.key_hash == key_hash)
        )).first()
        if row is None:
            raise Unauthenticated("invalid API key")
        now = utcnow()
        if row.revoked_at is not None:
            raise Unauthenticated(f"API key {row.prefix} was revoked; ask an administrator for a new key")
        if row.expires_at is not None and row.expires_at <= now:
            raise Unauthenticated(f"API key {row.prefix} has expired; ask an administrator for a new key")
        if row.disabled_at is not None:
            raise Unauthenticated(f"the user of API key {row.prefix} is disabled")
        user = await get_user(connection, row.email)
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
        touching = asyncio.create_task(_touch(database, row.id, now))  # off the request's path
        _TOUCHING.add(touching)
        touching.add_done_callback(_TOUCHING.discard)
    principal = Principal(
        user_id=row.user_id, email=row.email, roles=frozenset(user.roles), teams=user.teams,
        scopes=frozenset(row.scopes.split()), key_id=row.id, via="key",
    )
    if cache is not None:
        cache.put(key_hash, principal, row.expires_at, generation)
    return principal
