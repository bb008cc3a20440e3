"""Shared counters for budgets, rate limits and in-flight requests: in Redis when
`CORRAL_REDIS_URL` is set (every replica sees the same, exact numbers: each change is one atomic
command), else in this process. Keys expire with the window they count.

Every Redis call is bounded by a timeout; when Redis cannot answer, callers get
`CountersUnavailable` and must fail closed.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

from corral.errors import Unavailable

REDIS_TIMEOUT_S = 2.0
REDIS_CONNECTIONS = 64


class CountersUnavailable(Unavailable):
    pass


class Counters(Protocol):
    async def get(self, keys: list[str]) -> list[float | None]: ...
    async def seed(self, key: str, value: float, ttl_s: float) -> None: ...
    async def add(self, key: str, amount: float, ttl_s: float) -> float: ...
    async def enter(self, key: str, token: str, limit: int, ttl_s: float) -> bool: ...
    async def leave(self, key: str, token: str) -> None: ...
    async def close(self) -> None: ...


class LocalCounters:
    """This process's counters (one replica, or no Redis)."""

    def __init__(self) -> None:
        self._values: dict[str, tuple[float, float]] = {}  # key -> (value, expires at)
        self._inside: dict[str, dict[str, float]] = {}  # key -> token -> expires at

    def _live(self, key: str) -> float | None:
        found = self._values.get(key)
        if found is None:
            return None
        if found[1] <= time.monotonic():
            del self._values[key]
            return None
        return found[0]

    async def get(self, keys: list[str]) -> list[float | None]:
        return [self._live(key) for key in keys]

    async def seed(self, key: str, value: float, ttl_s: float) -> None:
        if self._live(key) is None:
            self._values[key] = (value, time.monotonic() + ttl_s)

    async def add(self, key: str, amount: float, ttl_s: float) -> float:
        value = (self._live(key) or 0.0) + amount
        expires = self._values[key][1] if key in self._values else time.monotonic() + ttl_s
        self._values[key] = (value, expires)
        if len(self._values) > 100_000:  # windows past their end are dropped now and then
            now = time.monotonic()
            self._values = {k: v for k, v in self._values.items() if v[1] > now}
        return value

    async def enter(self, key: str, token: str, limit: int, ttl_s: float) -> bool:
        now = time.monotonic()
        inside = {t: until for t, until in self._inside.get(key, {}).items() if until > now}
        if len(inside) >= limit:
            self._inside[key] = inside
            return False
        inside[token] = now + ttl_s
        self._inside[key] = inside
        return True

    async def leave(self, key: str, token: str) -> None:
        inside = self._inside.get(key)
        if inside is not None:
            inside.pop(token, None)
            if not inside:
                del self._inside[key]

    async def close(self) -> None:
        return None


_ENTER = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""


class RedisCounters:
    """Counters every replica shares. `prefix` keeps deployments (and test runs) apart."""

    def __init__(self, url: str, prefix: str) -> None:
        import redis.asyncio as redis

        pool = redis.BlockingConnectionPool.from_url(  # callers queue for one of `max_connections`
            url, max_connections=REDIS_CONNECTIONS, timeout=REDIS_TIMEOUT_S, socket_timeout=REDIS_TIMEOUT_S,
            socket_connect_timeout=REDIS_TIMEOUT_S)
        self._redis = redis.Redis(connection_pool=pool)
        self._prefix = prefix.rstrip(":") + ":"
        self._enter = self._redis.register_script(_ENTER)

    async def _call(self, operation):  # noqa: ANN001, ANN202 - an awaitable factory
        import redis

        try:
            async with asyncio.timeout(REDIS_TIMEOUT_S * 2):
                return await operation()
        except (redis.RedisError, OSError, TimeoutError) as error:
            raise CountersUnavailable(f"the shared counters (Redis) did not answer: {type(error).__name__}; "
                                      "budgets and rate limits cannot be checked, so the request is refused") from None

    def key(self, name: str) -> str:
        return self._prefix + name

    def script(self, source: str):  # noqa: ANN201 - a registered Lua script
        return self._redis.register_script(source)

    async def run(self, script, keys: list[str], args: list[object]) -> object:  # noqa: ANN001
        """Run a registered script, bounded, failing closed like every other call."""
        return await self._call(lambda: script(keys=keys, args=args))

    async def get(self, keys: list[str]) -> list[float | None]:
        if not keys:
            return []
        values = await self._call(lambda: self._redis.mget([self._prefix + key for key in keys]))
        return [float(value) if value is not None else None for value in values]

    async def seed(self, key: str, value: float, ttl_s: float) -> None:
        await self._call(lambda: self._redis.set(self._prefix + key, repr(value), nx=True, px=max(1, int(ttl_s * 1000))))

    async def add(self, key: str, amount: float, ttl_s: float) -> float:
        full = self._prefix + key

        async def both() -> float:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.incrbyfloat(full, amount)
                pipe.pexpire(full, max(1, int(ttl_s * 1000)), nx=True)
                value, _ = await pipe.execute()
            return float(value)

        return await self._call(both)

    async def enter(self, key: str, token: str, limit: int, ttl_s: float) -> bool:
        now_ms = int(time.time() * 1000)
        result = await self._call(lambda: self._enter(keys=[self._prefix + key], args=[
            now_ms, now_ms + int(ttl_s * 1000), limit, token, int(ttl_s * 1000)]))
        return bool(result)

    async def leave(self, key: str, token: str) -> None:
        await self._call(lambda: self._redis.zrem(self._prefix + key, token))

    async def close(self) -> None:
        await self._redis.aclose()


def counters_for(redis_url: str | None, prefix: str) -> Counters:
    return RedisCounters(redis_url, prefix) if redis_url else LocalCounters()
