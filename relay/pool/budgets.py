"""Token budgets per client key: daily and monthly (UTC), counted in estimated tokens (input and
output, as relay counts them) in the state store's tallies, so every replica enforces the same
total. A request is admitted while something is left; the one that crosses the line finishes."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from ..errors import RateLimited
from .tallies import Tallies

PeriodName = Literal["daily", "monthly"]


@dataclass(frozen=True, slots=True)
class Period:
    """The day or month a spend counts in, and when it ends."""

    name: PeriodName
    table: str
    resets_at: float


@dataclass(frozen=True, slots=True)
class Budget:
    """A key's budgets (None: unlimited) and the hash its spending is counted under."""

    name: str
    hash: str
    daily: int | None
    monthly: int | None

    def limit(self, period: PeriodName) -> int | None:
        return self.daily if period == "daily" else self.monthly


def periods(now: float) -> tuple[Period, Period]:
    day = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    month = day.replace(day=1)
    next_month = (month + timedelta(days=32)).replace(day=1)
    return (
        Period("daily", f"budget:d:{day:%Y-%m-%d}", (day + timedelta(days=1)).timestamp()),
        Period("monthly", f"budget:m:{month:%Y-%m}", next_month.timestamp()),
    )


@dataclass(frozen=True, slots=True)
class Spent:
    """What every key has spent in the current day and month, read in one go."""

    spans: tuple[Period, Period]
    tokens: tuple[dict[str, int], dict[str, int]]  # per period: key hash -> tokens

    def of(self, key_hash: str) -> list[tuple[Period, int]]:
        return [(p, used.get(key_hash, 0)) for p, used in zip(self.spans, self.tokens, strict=True)]

    def view(self, budget: Budget) -> dict[str, object]:
        """What `GET /v1/admin/keys` shows: per period the budget, what is used and left, and the reset."""
        out: dict[str, object] = {}
        for period, used in self.of(budget.hash):
            limit = budget.limit(period.name)
            left = None if limit is None else max(0, limit - used)
            out[period.name] = {"tokens": limit, "used": used, "remaining": left, "resets_at": period.resets_at}
        return out


class Budgets:
    """Spending per key and period, and the refusal when a budget is used up."""

    def __init__(self, tallies: Tallies) -> None:
        self.tallies = tallies

    async def spent(self, now: float) -> Spent:
        spans = periods(now)
        daily, monthly = await self.tallies.read([p.table for p in spans])
        return Spent(spans, (daily, monthly))

    async def check(self, budget: Budget, now: float) -> None:
        """Raise RateLimited (with the seconds until the reset) when a budget is used up."""
        if budget.daily is None and budget.monthly is None:
            return
        for period, used in (await self.spent(now)).of(budget.hash):
            limit = budget.limit(period.name)
            if limit is not None and used >= limit:
                reset = datetime.fromtimestamp(period.resets_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
                message = (
                    f"key {budget.name!r} has used its {period.name} budget of {limit} tokens ({used} used); it resets at {reset}"
                )
                raise RateLimited(message, code="key_budget_exceeded", retry_after=max(1, math.ceil(period.resets_at - now)))

    def spend(self, key_hash: str, tokens: int, now: float) -> None:
        if tokens > 0:
            for period in periods(now):
                self.tallies.add(period.table, {key_hash: tokens}, period.resets_at + 86400)
