"""Counters kept over time: tables of named integer fields (an hour of usage, a key's budget
period), each expiring as a whole. In this process (kept in a file beside STATE_FILE), or in
Redis hashes that every replica adds to (`redis_tallies`).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .state_file import StateFile

# The usage file is written at most this often (every request changes it).
WRITE_INTERVAL = 60.0


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
