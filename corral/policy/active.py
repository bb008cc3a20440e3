"""The effective policy a server decides with: the active version, compiled once, with the
overrides in force. Reloaded when this process changes it, and otherwise checked at most every
REFRESH_SECONDS, so replicas converge within that time. Fails closed: with no active policy,
nothing can be decided.
"""

from __future__ import annotations

import asyncio
import time

from corral.errors import Unavailable
from corral.policy.engine import CompiledPolicy, EffectivePolicy
from corral.policy.overrides import list_overrides
from corral.policy.versions import active_version
from corral.store.database import Database

REFRESH_SECONDS = 2.0


class PolicyState:
    def __init__(self, database: Database, refresh_seconds: float = REFRESH_SECONDS) -> None:
        self._database = database
        self._refresh = refresh_seconds
        self._effective: EffectivePolicy | None = None
        self._checked = 0.0
        self._lock = asyncio.Lock()

    def invalidate(self) -> None:
        self._checked = 0.0

    async def current(self) -> EffectivePolicy:
        if self._effective is not None and time.monotonic() - self._checked < self._refresh:
            return self._effective
        async with self._lock:
            if self._effective is None or time.monotonic() - self._checked >= self._refresh:
                await self._load()
        assert self._effective is not None
        return self._effective

    async def _load(self) -> None:
        async with self._database.read() as connection:
            version = await active_version(connection)
            overrides = tuple(await list_overrides(connection))
        if version is None:
            raise Unavailable("no policy is active; start Corral with CORRAL_POLICY or --demo")
        compiled = self._effective.compiled if self._effective else None
        if compiled is None or compiled.version != version.id:
            compiled = CompiledPolicy(version.policy, version.id)
        self._effective = EffectivePolicy(compiled, overrides)
        self._checked = time.monotonic()
