"""The effective policy a server decides with: the active version, compiled once, with the
overrides in force. Reloaded before the next decision when this process changes it; otherwise
re-read in the background every REFRESH_SECONDS (requests go on with the one they have, and
keep its decision cache when nothing changed), so replicas converge within that time. Fails
closed: with no active policy, nothing can be decided.
"""

from __future__ import annotations

import asyncio
import logging
import time

from corral.errors import Unavailable
from corral.policy.engine import CompiledPolicy, EffectivePolicy
from corral.policy.overrides import list_overrides
from corral.policy.versions import active_version
from corral.store.database import Database

REFRESH_SECONDS = 2.0
log = logging.getLogger("corral.policy")


class PolicyState:
    def __init__(self, database: Database, refresh_seconds: float = REFRESH_SECONDS) -> None:
        self._database = database
        self._refresh = refresh_seconds
        self._effective: EffectivePolicy | None = None
        self._checked = 0.0
        self._changed_here = False
        self._lock = asyncio.Lock()
        self._refreshing: asyncio.Task[None] | None = None

    def invalidate(self) -> None:
        self._changed_here = True

    async def current(self) -> EffectivePolicy:
        if self._effective is None or self._changed_here:
            async with self._lock:
                if self._effective is None or self._changed_here:
                    self._changed_here = False
                    await self._load()
        elif time.monotonic() - self._checked >= self._refresh and self._refreshing is None:
            self._refreshing = asyncio.create_task(self._refresh_in_background())
        assert self._effective is not None
        return self._effective

    async def _refresh_in_background(self) -> None:
        try:
            async with asyncio.timeout(30), self._lock:
                await self._load()
        except Exception:  # kept: the last good policy goes on deciding; retried at the next refresh
            log.exception("re-reading the active policy failed")
            self._checked = time.monotonic()
        finally:
            self._refreshing = None

    async def _load(self) -> None:
        async with self._database.read() as connection:
            version = await active_version(connection)
            overrides = tuple(await list_overrides(connection))
        if version is None:
            raise Unavailable("no policy is active; start Corral with CORRAL_POLICY or --demo")
        current = self._effective
        if current is None or current.compiled.version != version.id:
            self._effective = EffectivePolicy(CompiledPolicy(version.policy, version.id), overrides)
        elif current.overrides != overrides:
            self._effective = EffectivePolicy(current.compiled, overrides)
        self._checked = time.monotonic()
