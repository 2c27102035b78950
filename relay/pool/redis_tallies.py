"""Tallies in Redis hashes that every replica adds to.

Adding never waits for Redis: increments are buffered and pushed in one pipeline shortly after;
while Redis is away they wait (bounded) and are pushed when it is back, and this replica's own
counts answer reads meanwhile (marked partial).
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Mapping

from loguru import logger
from redis.asyncio import Redis
from redis.exceptions import RedisError

from .tallies import MemoryTallies, Tallies

# Increments wait this long to be pushed with others: a burst of requests is one pipeline, and
# another replica sees them a moment later.
PUSH_DELAY = 0.2
# Fields buffered while Redis is away, at most; beyond it the oldest tables' counts are dropped.
MAX_PENDING_FIELDS = 100_000


class RedisTallies(Tallies):
    """Tables as Redis hashes (`{prefix}:t:{table}`), with this replica's counts kept locally too."""

    def __init__(self, client: Redis, prefix: str, local: MemoryTallies) -> None:
        self.client = client
        self.prefix = prefix
        self.local = local
        self._pending: dict[str, tuple[float, Counter[str]]] = {}
        self._push: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()

    def add(self, table: str, fields: Mapping[str, int], expires: float) -> None:
        self.local.add(table, fields, expires)
        kept = self._pending.setdefault(table, (expires, Counter()))
        kept[1].update(fields)
        if self._push is None:
            self._push = asyncio.get_running_loop().call_later(PUSH_DELAY, self._push_soon)

    def _push_soon(self) -> None:
        self._push = None
        task = asyncio.create_task(self.flush())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def flush(self) -> None:
        async with self._lock:  # one push at a time, so a failed one is merged back in order
            taken, self._pending = self._pending, {}
            if not taken:
                return
            try:
                async with self.client.pipeline(transaction=False) as pipe:
                    for table, (expires, counts) in taken.items():
                        name = f"{self.prefix}:t:{table}"
                        for field, amount in counts.items():
                            pipe.hincrby(name, field, amount)
                        pipe.expireat(name, math.ceil(expires))
                    await pipe.execute()
            except (RedisError, OSError) as exc:
                logger.debug("usage counters wait for Redis: {}", exc.__class__.__name__)
                self._merge_back(taken)

    def _merge_back(self, taken: dict[str, tuple[float, Counter[str]]]) -> None:
        for table, (expires, counts) in taken.items():
            self._pending.setdefault(table, (expires, Counter()))[1].update(counts)
        while sum(len(c) for _, c in self._pending.values()) > MAX_PENDING_FIELDS:
            oldest = min(self._pending, key=lambda t: self._pending[t][0])
            logger.warning("usage counters of {} dropped: Redis has been away too long", oldest)
            del self._pending[oldest]

    async def read(self, tables: list[str]) -> list[dict[str, int]]:
        await self.flush()
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for table in tables:
                    pipe.hgetall(f"{self.prefix}:t:{table}")
                found: list[dict[str, str]] = await pipe.execute()
        except (RedisError, OSError):
            self.partial = True
            return await self.local.read(tables)
        self.partial = False
        return [{k: int(v) for k, v in fields.items()} for fields in found]

    async def close(self) -> None:
        if self._push is not None:
            self._push.cancel()
            self._push = None
        await self.flush()
        await asyncio.gather(*self._tasks, return_exceptions=True)
