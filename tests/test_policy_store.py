"""The approval chain's and overrides' storage on each database: races between replicas end with
exactly one winner, and each override's expiry is recorded exactly once."""

import asyncio
from datetime import timedelta
from importlib.resources import files

from sqlalchemy import func, insert, select

from corral.errors import Conflict
from corral.events.model import utcnow
from corral.identity.access import Principal
from corral.identity.bootstrap import ADMIN_EMAIL, ensure_admin
from corral.policy import versions
from corral.policy.overrides import list_overrides, record_expiries
from corral.store.database import Database
from corral.store.migrate import upgrade
from corral.store.tables import events, overrides, users

STARTER = (files("corral.policy") / "starter.yaml").read_text()


async def _admin(database: Database, tmp_path) -> Principal:
    await ensure_admin(database, tmp_path, "Test", None)
    async with database.read() as connection:
        user_id = (await connection.execute(select(users.c.id).where(users.c.email == ADMIN_EMAIL))).scalar_one()
    return Principal(user_id=user_id, email=ADMIN_EMAIL, roles=frozenset({"admin"}), teams=(),
                     scopes=frozenset({"admin"}))


def test_two_approved_proposals_activated_at_once_have_one_winner(fresh_database, tmp_path):
    upgrade(fresh_database)

    async def scenario():
        database = Database(fresh_database)
        try:
            admin = await _admin(database, tmp_path)
            async with database.transaction() as connection:
                await versions.install_first(connection, STARTER, "starter")
            proposals = []
            for rpm in (10, 20):
                async with database.transaction() as connection:
                    version = await versions.propose(connection, admin, STARTER + f"limits: [{{scope: org, rpm: {rpm}}}]\n",
                                                     f"rpm {rpm}")
                    await versions.approve(connection, admin, version.id, "")  # the starter lets authors approve
                    proposals.append(version.id)

            async def activate(version_id):
                async with database.transaction() as connection:
                    return await versions.activate(connection, admin, version_id)

            results = await asyncio.gather(*(activate(v) for v in proposals), return_exceptions=True)
            async with database.read() as connection:
                active = await versions.active_version(connection)
            return results, active
        finally:
            await database.close()

    results, active = asyncio.run(scenario())
    winners = [r for r in results if not isinstance(r, Exception)]
    assert len(winners) == 1 and all(isinstance(r, Conflict) for r in results if r not in winners)
    assert active.id == winners[0].id


def test_each_override_expiry_is_recorded_once_even_with_replicas_sweeping_together(fresh_database, tmp_path):
    upgrade(fresh_database)

    async def scenario():
        database = Database(fresh_database)
        try:
            now = utcnow()
            async with database.transaction() as connection:
                for index, ends in enumerate([now - timedelta(minutes=1), now - timedelta(seconds=1),
                                              now + timedelta(hours=1)]):
                    await connection.execute(insert(overrides).values(
                        kind="read_only", target="org", params={}, reason=f"drill {index}", created_by="sre@example.com",
                        created_at=now - timedelta(hours=1), expires_at=ends, expiry_recorded=False))

            async def sweep():
                async with database.transaction() as connection:
                    return await record_expiries(connection)

            swept = await asyncio.gather(sweep(), sweep(), sweep())
            again = await sweep()
            async with database.read() as connection:
                recorded = (await connection.execute(
                    select(func.count()).select_from(events).where(events.c.kind == "override.expired"))).scalar_one()
                in_force = await list_overrides(connection)
            return swept, again, recorded, in_force
        finally:
            await database.close()

    swept, again, recorded, in_force = asyncio.run(scenario())
    assert sorted(o.reason for batch in swept for o in batch) == ["drill 0", "drill 1"]
    assert again == [] and recorded == 2
    assert [o.reason for o in in_force] == ["drill 2"]
