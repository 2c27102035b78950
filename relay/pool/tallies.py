"""Counters kept over time: tables of named integer fields (an hour of usage, a key's budget
period), each expiring as a whole. In this process (kept in a file beside STATE_FILE), or in
Redis hashes that every replica adds to.

Adding never waits for Redis: increments are buffered and pushed in one pipeline shortly after;
while Redis is away they wait (bounded) and are pushed when it is back, and this replica's own
counts answer reads meanwhile (marked partial).
"""

from __future__ import annotations

import asyncio
import math
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from loguru import logger
from redis.asyncio import Redis
from redis.exceptions import RedisError

from .state_file import StateFile

# Increments wait this long to be pushed with others: a burst of requests is one pipeline, and
# another replica sees them a moment later.
PUSH_DELAY = 0.2
# Fields buffered while Redis is away, at most; beyond it the oldest tables' counts are dropped.
MAX_PENDING_FIELDS = 100_000
# The usage file is written at most this often (every request changes it).
WRITE_INTERVAL = 10.0


class Tallies(ABC):
    """Where counters over time are kept."""

    #: Reads cover this replica only (Redis was unreachable for the last read).
    partial: bool = False

    @abstractmethod
    def add(self, table: str, fields: Mapping[str, int], expires: float) -> None:
        """Add to a table's fields; the table is dropped after `expires` (unix seconds)."""

    @abstractmethod
    async def read(self, tables: list[str]) -> list[dict[str, int]]:
        """Each table's fields, empty for tables never written or expired."""

    async def flush(self) -> None:
        """Push what is buffered now."""

    async def close(self) -> None: ...


class MemoryTallies(Tallies):
    """Tables in this process; with a path, kept across restarts in that file."""

    def __init__(self, path: Path | None = None, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._tables: dict[str, tuple[float, Counter[str]]] = {}
        self._file = StateFile(path, self._snapshot, min_interval=WRITE_INTERVAL) if path else None
        if self._file is not None:
            self._file.remove_leftovers()
            self._restore(self._file.read())

    def add(self, table: str, fields: Mapping[str, int], expires: float) -> None:
        kept = self._tables.get(table)
        if kept is None:
            self._drop_expired()
            kept = self._tables[table] = (expires, Counter())
        elif expires > kept[0]:
            kept = self._tables[table] = (expires, kept[1])
        kept[1].update(fields)
        if self._file is not None:
            self._file.dirty()

    async def read(self, tables: list[str]) -> list[dict[str, int]]:
        now = self._clock()
        return [dict(kept[1]) if (kept := self._tables.get(t)) and kept[0] > now else {} for t in tables]

    def _drop_expired(self) -> None:
        now = self._clock()
        for table in [t for t, (expires, _) in self._tables.items() if expires <= now]:
            del self._tables[table]

    def _snapshot(self) -> dict[str, Any]:
        return {t: {"expires": expires, "fields": dict(counts)} for t, (expires, counts) in self._tables.items()}

    def _restore(self, saved: dict[str, Any]) -> None:
        for table, kept in saved.items():
            if isinstance(kept, dict) and isinstance(kept.get("fields"), dict):
                fields = {k: v for k, v in kept["fields"].items() if isinstance(v, int)}
                self._tables[table] = (float(kept.get("expires") or 0), Counter(fields))
        self._drop_expired()

    async def close(self) -> None:
        if self._file is not None:
            await self._file.flush()


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
