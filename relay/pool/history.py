"""Usage over time: requests, errors, estimated tokens and time to first token per client key,
account and model, in hourly buckets kept in the state store's tallies for USAGE_HISTORY_DAYS."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from .tallies import Tallies

HOUR = 3600
DAY = 24 * HOUR
# What each bucket counts per (key, account, model); ttft_ms / ttft_n is the mean time to first token.
METRICS = ("requests", "errors", "tokens_in", "tokens_out", "ttft_ms", "ttft_n")
# Each metric is stored under one letter: field names repeat in every bucket of every group.
CODES = dict(zip(METRICS, "reiotn", strict=True))
NAMES = {code: name for name, code in CODES.items()}
Dimension = Literal["key", "account", "model"]
DIMENSIONS: tuple[Dimension, ...] = ("key", "account", "model")
# Separates the parts of a field name; none of them can hold it (key names, aliases and model
# labels are printable).
SEP = "\t"


@dataclass(slots=True)
class Row:
    """One bucket of one group."""

    start: int
    group: tuple[str, ...]
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(METRICS, 0))

    def as_dict(self, dims: tuple[Dimension, ...]) -> dict[str, object]:
        c = self.counts
        ttft = round(c["ttft_ms"] / c["ttft_n"], 1) if c["ttft_n"] else None
        return {
            "start": self.start,
            **dict(zip(dims, self.group, strict=True)),
            "requests": c["requests"],
            "errors": c["errors"],
            "tokens_in": c["tokens_in"],
            "tokens_out": c["tokens_out"],
            "ttft_ms": ttft,
        }


@dataclass(frozen=True, slots=True)
class Query:
    """A period (unix seconds, end excluded), a bucket size, grouping and filters."""

    start: float
    end: float
    bucket: int = HOUR
    group: tuple[Dimension, ...] = ("key",)
    only: tuple[tuple[Dimension, str], ...] = ()

    def hours(self) -> list[int]:
        first = int(self.start // HOUR * HOUR)
        return list(range(first, math.ceil(self.end / HOUR) * HOUR, HOUR))


class UsageHistory:
    """Records each answered request and answers queries over the kept hours."""

    def __init__(self, tallies: Tallies, days: int) -> None:
        self.tallies = tallies
        self.keep = days * DAY

    @property
    def partial(self) -> bool:
        return self.tallies.partial

    def record(
        self, now: float, key: str, account: str, model: str, *, tokens: tuple[int, int], error: bool, ttft_ms: float | None
    ) -> None:
        hour = int(now // HOUR * HOUR)
        base = SEP.join((key, account or "-", model or "-")) + SEP
        counts = {"requests": 1, "tokens_in": tokens[0], "tokens_out": tokens[1], "errors": int(error)}
        if ttft_ms is not None:
            counts["ttft_ms"], counts["ttft_n"] = round(ttft_ms), 1
        fields = {base + CODES[name]: n for name, n in counts.items() if n}
        self.tallies.add(table(hour), fields, hour + HOUR + self.keep)

    async def query(self, q: Query) -> list[Row]:
        hours = q.hours()
        rows: dict[tuple[int, tuple[str, ...]], Row] = {}
        for hour, fields in zip(hours, await self.tallies.read([table(h) for h in hours]), strict=True):
            start = hour // q.bucket * q.bucket  # UTC days: the epoch starts one
            for name, amount in fields.items():
                parts = name.split(SEP)
                if len(parts) != 4 or parts[3] not in NAMES:
                    continue
                where = dict(zip(DIMENSIONS, parts[:3], strict=True))
                if any(where[dim] != value for dim, value in q.only):
                    continue
                group = tuple(where[d] for d in q.group)
                row = rows.setdefault((start, group), Row(start, group))
                row.counts[NAMES[parts[3]]] += amount
        return sorted(rows.values(), key=lambda r: (r.start, r.group))


def table(hour: int) -> str:
    return f"usage:{hour}"


def totals(rows: Iterable[Row]) -> dict[str, int]:
    out = dict.fromkeys(METRICS, 0)
    for row in rows:
        for name, amount in row.counts.items():
            out[name] += amount
    return out
