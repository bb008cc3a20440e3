"""The counters behind budgets and rate limits: in-process and in Redis. Two RedisCounters on one
Redis are two replicas; their concurrent adds and seats must come out exact. An unreachable Redis
is an error the gateway fails closed on, never a silent zero."""

from __future__ import annotations

import asyncio

import pytest

from corral.store.counters import CountersUnavailable, LocalCounters, RedisCounters
from tests.conftest import REDIS_URL, unique


def redis_pair():
    prefix = unique("corral-test-counters")
    return RedisCounters(REDIS_URL, prefix), RedisCounters(REDIS_URL, prefix)


def run(scenario):
    return asyncio.run(scenario())


@pytest.mark.parametrize("shared", [False, True], ids=["local", "redis"])
def test_concurrent_adds_are_exact(shared):
    async def scenario():
        first, second = redis_pair() if shared else (LocalCounters(),) * 2
        try:
            await asyncio.gather(*(counter.add("spend:x", 0.25, 60) for counter in (first, second) * 200))
            return (await first.get(["spend:x", "spend:never"]))
        finally:
            await first.close()
            await second.close()

    assert run(scenario) == [100.0, None]  # 400 adds of a quarter


@pytest.mark.parametrize("shared", [False, True], ids=["local", "redis"])
def test_seats_are_limited_across_replicas_and_given_back(shared):
    async def scenario():
        first, second = redis_pair() if shared else (LocalCounters(),) * 2
        try:
            entered = await asyncio.gather(*(counter.enter("inflight:x", f"t{n}", 3, 60)
                                             for n, counter in enumerate((first, second) * 5)))
            await first.leave("inflight:x", next(f"t{n}" for n, ok in enumerate(entered) if ok))
            again = await second.enter("inflight:x", "late", 3, 60)
            full = await first.enter("inflight:y", "a", 1, 60), await second.enter("inflight:y", "b", 1, 60)
            return sum(entered), again, full
        finally:
            await first.close()
            await second.close()

    assert run(scenario) == (3, True, (True, False))


@pytest.mark.parametrize("shared", [False, True], ids=["local", "redis"])
def test_a_seed_never_overwrites_a_count(shared):
    async def scenario():
        counters = redis_pair()[0] if shared else LocalCounters()
        try:
            await counters.seed("spend:y", 5.0, 60)
            await counters.add("spend:y", 1.0, 60)
            await counters.seed("spend:y", 0.0, 60)  # another replica seeding late
            return (await counters.get(["spend:y"]))[0]
        finally:
            await counters.close()

    assert run(scenario) == 6.0


def test_an_unreachable_redis_is_an_error_not_a_zero():
    async def scenario():
        counters = RedisCounters("redis://127.0.0.1:9/0", "corral-test")
        try:
            with pytest.raises(CountersUnavailable, match="cannot be checked, so the request is refused"):
                await counters.get(["spend:z"])
            with pytest.raises(CountersUnavailable):
                await counters.add("spend:z", 1.0, 60)
        finally:
            await counters.close()

    run(scenario)
