"""Which targets are fit to serve: per `provider/model`, a sliding window of outcomes. A target
whose recent error rate passes its provider's threshold (with enough requests to judge) is
cooled down, then half-open: one probe request decides whether it is back.

`TargetHealth` judges in this process; `SharedTargetHealth` keeps the same state in Redis, so
every replica sees one window per target, one cool-down and one probe (each check or outcome
is one atomic script).
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from dataclasses import dataclass, field

from corral.policy.schema import Health
from corral.store.counters import RedisCounters


PROBE_TIMEOUT_MS = 120_000  # a probe that never reports back frees the next one after this


@dataclass
class _Target:
    outcomes: deque[tuple[float, bool]] = field(default_factory=deque)  # (when, failed)
    failures: int = 0
    open_until: float = 0.0  # cooling down until then
    probing: float = 0.0  # half-open: when the one probe went out (0: none out)


class TargetHealth:
    def __init__(self, clock=time.monotonic, max_targets: int = 10_000) -> None:  # noqa: ANN001 - a clock
        self._targets: dict[str, _Target] = {}
        self._clock = clock
        self._max = max_targets

    async def available(self, target: str, rules: Health) -> bool:
        """May a request go to `target` now? Claims the probe when the target is half-open."""
        state = self._targets.get(target)
        if state is None or not state.open_until:
            return True
        now = self._clock()
        if now < state.open_until or (state.probing and now - state.probing < PROBE_TIMEOUT_MS / 1000):
            return False
        state.probing = now  # the cool-down is over (or the last probe never reported): this request probes
        return True

    async def record(self, target: str, rules: Health, failed: bool) -> None:
        if target not in self._targets and len(self._targets) >= self._max:
            self._targets = {name: kept for name, kept in self._targets.items() if kept.open_until}  # healthy ones go
        state = self._targets.setdefault(target, _Target())
        now = self._clock()
        if state.probing or state.open_until:
            state.probing = 0.0
            if failed:
                state.open_until = now + rules.cooldown_s
                return
            state.open_until = 0.0  # the probe succeeded: back in rotation, judged afresh
            state.outcomes.clear()
            state.failures = 0
        state.outcomes.append((now, failed))
        state.failures += failed
        while state.outcomes and state.outcomes[0][0] < now - rules.window_s:
            state.failures -= state.outcomes.popleft()[1]
        if len(state.outcomes) >= rules.min_requests and state.failures / len(state.outcomes) >= rules.error_rate:
            state.open_until = now + rules.cooldown_s



# KEYS: the target's outcomes, its failures, its cool-down, "tripped" (cooled down and not yet
# back), its probe. Scores are milliseconds.
_AVAILABLE = """
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
if redis.call('EXISTS', KEYS[4]) == 0 then return 1 end
if redis.call('SET', KEYS[5], '1', 'NX', 'PX', ARGV[1]) then return 1 end
return 0
"""
_RECORD = """
local now, failed, window = tonumber(ARGV[1]), ARGV[2] == '1', tonumber(ARGV[3])
if redis.call('EXISTS', KEYS[4]) == 1 then
  redis.call('DEL', KEYS[5])
  if failed then redis.call('SET', KEYS[3], '1', 'PX', ARGV[6]) return 1 end
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[4])
end
redis.call('ZADD', KEYS[1], now, ARGV[7])
if failed then redis.call('ZADD', KEYS[2], now, ARGV[7]) end
for i = 1, 2 do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - window)
  redis.call('PEXPIRE', KEYS[i], window)
end
local total, failures = redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2])
if total >= tonumber(ARGV[4]) and failures / total >= tonumber(ARGV[5]) then
  redis.call('SET', KEYS[3], '1', 'PX', ARGV[6])
  redis.call('SET', KEYS[4], '1', 'PX', ARGV[8])
  redis.call('DEL', KEYS[1], KEYS[2])
  return 1
end
return 0
"""


class SharedTargetHealth:
    def __init__(self, counters: RedisCounters) -> None:
        self._counters = counters
        self._available = counters.script(_AVAILABLE)
        self._record = counters.script(_RECORD)

    def _keys(self, target: str) -> list[str]:
        return [self._counters.key(f"health:{target}:{part}") for part in ("all", "failed", "cool", "tripped", "probe")]

    async def available(self, target: str, rules: Health) -> bool:
        return bool(await self._counters.run(self._available, self._keys(target), [PROBE_TIMEOUT_MS]))

    async def record(self, target: str, rules: Health, failed: bool) -> None:
        window = int(rules.window_s * 1000)
        cooldown = int(rules.cooldown_s * 1000)
        await self._counters.run(self._record, self._keys(target), [
            int(time.time() * 1000), int(failed), window, rules.min_requests, rules.error_rate, cooldown,
            f"{time.time_ns()}:{secrets.token_hex(4)}", cooldown + PROBE_TIMEOUT_MS + window])


def health_for(counters: object) -> TargetHealth | SharedTargetHealth:
    return SharedTargetHealth(counters) if isinstance(counters, RedisCounters) else TargetHealth()
