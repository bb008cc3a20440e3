"""Which targets are fit to serve: per `provider/model`, a sliding window of outcomes. A target
whose recent error rate passes its provider's threshold (with enough requests to judge) is
cooled down, then half-open: one probe request decides whether it is back. In-process: each
replica judges from what it sees itself.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from corral.policy.schema import Health


@dataclass
class _Target:
    outcomes: deque[tuple[float, bool]] = field(default_factory=deque)  # (when, failed)
    failures: int = 0
    open_until: float = 0.0  # cooling down until then
    probing: bool = False  # half-open: one probe is out


class TargetHealth:
    def __init__(self, clock=time.monotonic) -> None:  # noqa: ANN001 - a clock, swapped in tests
        self._targets: dict[str, _Target] = {}
        self._clock = clock

    def available(self, target: str, rules: Health) -> bool:
        """May a request go to `target` now? Claims the probe when the target is half-open."""
        state = self._targets.get(target)
        if state is None or not state.open_until:
            return True
        if self._clock() < state.open_until or state.probing:
            return False
        state.probing = True  # the cool-down is over: this request is the probe
        return True

    def record(self, target: str, rules: Health, failed: bool) -> None:
        state = self._targets.setdefault(target, _Target())
        now = self._clock()
        if state.probing or state.open_until:
            state.probing = False
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

    def status(self, target: str) -> str:
        state = self._targets.get(target)
        if state is None or not state.open_until:
            return "healthy"
        return "probing" if state.probing or self._clock() >= state.open_until else "cooling down"
