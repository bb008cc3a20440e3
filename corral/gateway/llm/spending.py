"""Budgets and rate limits on model traffic, from the policy's `budgets:` and `limits:`.

A scope names whose counter a request counts against: `org`, `team:NAME` / `team:*` (each team
of the caller), `user:EMAIL` / `user:*`, `key:ID` / `key:*`, `profile:NAME` / `profile:*`.
- A budget (day / week / month, UTC) refuses a request that would *start* with its spend at or
  above the limit (429, naming the budget, the spend and when it resets); crossing `soft_at`
  and crossing the limit are recorded once each, as events, for alerting.
- A limit counts requests per minute (`rpm`), tokens per minute (`tpm`, counted when the
  answer's usage is known) and requests in flight (`concurrency`).
Counters are shared through Redis when it is configured (corral/store/counters.py). A budget's
counter starts from the spend already recorded in the period's `llm.request` events, so a
restart forgets nothing.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import func, select

from corral.errors import CorralError
from corral.identity.access import Principal
from corral.policy.schema import Budget, Limit, Policy
from corral.store.counters import Counters
from corral.store.database import Database
from corral.store.tables import events

IN_FLIGHT_TTL_S = 900.0  # a request that never finished stops counting after this


class LimitReached(CorralError):
    status, code = 429, "rate_limited"

    def __init__(self, message: str, code: str, retry_after: int) -> None:
        super().__init__(message)
        self.code, self.retry_after = code, str(max(1, retry_after))


@dataclass(frozen=True)
class Counted:
    """One counter a request counts against."""

    key: str
    who: str  # the scope, made concrete: "user:alice@example.com"
    ends: datetime
    rule: Budget | Limit


@dataclass
class Admission:
    """What a request holds while it runs: the counters to charge and the seat to give back."""

    budgets: list[Counted] = field(default_factory=list)
    token_windows: list[Counted] = field(default_factory=list)
    seats: list[str] = field(default_factory=list)
    token: str = ""  # names this request's seats, made when it takes one


def concrete(scope: str, principal: Principal, profile: str | None) -> list[str]:
    """The counters a scope means for this caller: none when it does not cover them."""
    if scope == "org":
        return ["org"]
    kind, _, name = scope.partition(":")
    mine = {"user": [principal.email], "team": list(principal.teams),
            "key": [str(principal.key_id)] if principal.key_id is not None else [],
            "profile": [profile] if profile else []}.get(kind, [])
    return [f"{kind}:{value}" for value in mine if name in ("*", value)]


def window(period: str, now: datetime) -> tuple[datetime, datetime]:
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day, day + timedelta(days=1)
    if period == "week":
        start = day - timedelta(days=day.weekday())
        return start, start + timedelta(days=7)
    start = day.replace(day=1)
    return start, (start + timedelta(days=32)).replace(day=1)


def _usd(amount: float) -> str:
    return f"${amount:,.2f}" if amount >= 0.01 or amount == 0 else f"${amount:.6f}"


def _when(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Spending:
    def __init__(self, counters: Counters, database: Database) -> None:
        self.counters = counters
        self._database = database

    async def admit(self, policy: Policy, principal: Principal, profile: str | None, now: datetime,
                    max_concurrency: int | None = None) -> Admission:
        """Count the request in, or refuse it (LimitReached) naming what it ran into."""
        admission = Admission()
        await self._budgets(policy, principal, profile, now, admission)
        try:
            await self._limits(policy, principal, profile, now, admission, max_concurrency)
        except BaseException:
            await self.release(admission)
            raise
        return admission

    async def _budgets(self, policy: Policy, principal: Principal, profile: str | None, now: datetime,
                       admission: Admission) -> None:
        for budget in policy.budgets:
            start, ends = window(budget.period, now)
            for who in concrete(budget.scope, principal, profile):
                admission.budgets.append(Counted(f"spend:{who}:{budget.period}:{start.date()}", who, ends, budget))
        values = await self.counters.get([counted.key for counted in admission.budgets])
        for counted, spent in zip(admission.budgets, values):
            if spent is None:  # first use in this period: start from what was recorded
                spent = await self._recorded_spend(counted.who, window(counted.rule.period, now)[0])
                await self.counters.seed(counted.key, spent, (counted.ends - now).total_seconds() + 3600)
            budget = counted.rule
            if spent >= budget.limit_usd:
                raise LimitReached(
                    f"budget exhausted: {budget.scope} ({counted.who}) may spend {_usd(budget.limit_usd)} per "
                    f"{budget.period} and has spent {_usd(spent)}; it resets at {_when(counted.ends)}",
                    "budget_exceeded", math.ceil((counted.ends - now).total_seconds()))

    async def _limits(self, policy: Policy, principal: Principal, profile: str | None, now: datetime,
                      admission: Admission, max_concurrency: int | None) -> None:
        minute = now.replace(second=0, microsecond=0)
        ends = minute + timedelta(minutes=1)
        retry = math.ceil((ends - now).total_seconds())
        for limit in policy.limits:
            for who in concrete(limit.scope, principal, profile):
                if limit.concurrency is not None:
                    await self._seat(f"inflight:{who}", admission, limit.concurrency,
                                     f"rate limit: {limit.scope} ({who}) may have {limit.concurrency} requests in flight")
                if limit.rpm is not None:
                    made = await self.counters.add(f"rpm:{who}:{minute:%Y%m%d%H%M}", 1, 120)
                    if made > limit.rpm:
                        raise LimitReached(f"rate limit: {limit.scope} ({who}) may make {limit.rpm} requests per "
                                           f"minute; try again in {retry} s", "rate_limited", retry)
                if limit.tpm is not None:
                    counted = Counted(f"tpm:{who}:{minute:%Y%m%d%H%M}", who, ends, limit)
                    used = (await self.counters.get([counted.key]))[0] or 0
                    if used >= limit.tpm:
                        raise LimitReached(f"rate limit: {limit.scope} ({who}) may use {limit.tpm:,} tokens per "
                                           f"minute and has used {used:,.0f}; try again in {retry} s",
                                           "rate_limited", retry)
                    admission.token_windows.append(counted)
        if max_concurrency is not None:  # an override's cap on this caller's requests in flight
            await self._seat(f"inflight:override:user:{principal.email}", admission, max_concurrency,
                             f"an incident override limits {principal.email} to {max_concurrency} requests in flight")

    async def _seat(self, key: str, admission: Admission, limit: int, message: str) -> None:
        admission.token = admission.token or secrets.token_hex(8)
        if not await self.counters.enter(key, admission.token, limit, IN_FLIGHT_TTL_S):
            raise LimitReached(f"{message}; wait for one to finish", "rate_limited", 1)
        admission.seats.append(key)

    async def charge(self, admission: Admission, cost: float | None, tokens: int) -> list[tuple[str, dict[str, Any]]]:
        """Count what the request used; return the budget thresholds it crossed, as (event kind,
        attributes), each once: the counter's atomic add says who crossed it."""
        crossed: list[tuple[str, dict[str, Any]]] = []
        if cost:
            for counted in admission.budgets:
                budget = counted.rule
                ttl = (counted.ends - datetime.now(timezone.utc)).total_seconds() + 3600
                total = await self.counters.add(counted.key, cost, ttl)
                before = total - cost
                about = {"budget": budget.scope, "who": counted.who, "period": budget.period,
                         "limit_usd": budget.limit_usd, "spent_usd": round(total, 6), "resets_at": _when(counted.ends)}
                if budget.soft_at is not None and before < budget.soft_at * budget.limit_usd <= total:
                    crossed.append(("budget.soft_limit", about))
                if before < budget.limit_usd <= total:
                    crossed.append(("budget.exhausted", about))
        if tokens:
            for counted in admission.token_windows:
                await self.counters.add(counted.key, tokens, 120)
        return crossed

    async def release(self, admission: Admission) -> None:
        for key in admission.seats:
            await self.counters.leave(key, admission.token)
        admission.seats.clear()

    async def _recorded_spend(self, who: str, since: datetime) -> float:
        kind, _, name = who.partition(":")
        query = select(func.coalesce(func.sum(events.c.cost_usd), 0.0)).where(
            events.c.kind == "llm.request", events.c.time >= since)
        column = {"user": events.c.user_email, "team": events.c.team, "key": events.c.key_id,
                  "profile": events.c.resource}.get(kind)
        if column is not None:
            query = query.where(column == (int(name) if kind == "key" else name))
        async with self._database.read() as connection:
            return float((await connection.execute(query)).scalar_one())
