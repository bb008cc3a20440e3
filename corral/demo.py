"""Demo data for `corral serve --demo`: a small organisation to explore. Seeded once; a restart
leaves what is there alone."""

from __future__ import annotations

from sqlalchemy import select

from corral.identity.directory import create_team, create_user
from corral.policy.versions import active_version
from corral.store.database import Database
from corral.store.tables import teams

DEMO_TEAMS = {
    "platform": "Builds and runs the developer platform",
    "payments": "Owns the payments services",
    "contractors": "External contractors",
    "security": "Reviews provider and access changes",
}
DEMO_USERS = [
    ("alice@example.com", "Alice Developer", ("platform",), ("developer",)),
    ("bob@example.com", "Bob Approver", ("platform",), ("developer", "approver")),
    ("priya@example.com", "Priya Payments", ("payments",), ("developer",)),
    ("carol@example.com", "Carol Contractor", ("contractors",), ("contractor",)),
    ("dana@example.com", "Dana Auditor", (), ("auditor",)),
    ("evan@example.com", "Evan Approver", ("platform",), ("developer", "approver")),
    ("sam@example.com", "Sam Security", ("security",), ("approver",)),
    ("omar@example.com", "Omar On-call", ("platform",), ("developer", "sre")),
]


async def seed_demo(database: Database) -> bool:
    """Create the demo teams and users unless they exist; True if anything was created."""
    async with database.transaction() as connection:
        await database.lock_for_startup(connection)
        if (await connection.execute(select(teams.c.id).where(teams.c.name == "platform"))).first():
            return False
        for name, description in DEMO_TEAMS.items():
            await create_team(connection, None, name, description)
        known_roles = (await active_version(connection)).policy.roles  # the demo policy adds `sre`
        for email, full_name, team_names, roles in DEMO_USERS:
            await create_user(connection, None, email, full_name, team_names, roles, known_roles)
    return True
