"""STATE_FILE on disk: read once at start, written off the event loop (one write at a time, the
newest content only), atomically. Kept Responses answers live in a file of their own beside it
(`<STATE_FILE>.answers`), so that an account's state change never rewrites a thousand answers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loguru import logger

# Kept answers change with every Responses answer: written at most this often (and at shutdown).
ANSWERS_WRITE_INTERVAL = 5.0

Snapshot = Callable[[], dict[str, Any]]


class StateFile:
    """One JSON document on disk; `dirty()` asks for a write of what `snapshot` then returns."""

    def __init__(self, path: Path, snapshot: Snapshot, *, min_interval: float = 0.0) -> None:
        self.path = path
        self.snapshot = snapshot
        self.min_interval = min_interval
        self.problem: str | None = None  # why the last write failed
        self._dirty = False
        self._task: asyncio.Task[None] | None = None
        self._hurry = asyncio.Event()  # shutdown: no more waiting between writes

    def remove_leftovers(self) -> int:
        """Delete the temporary copies a write cut off by kill -9 left beside the file (they may
        hold cookies of accounts removed since); returns how many. Only at start-up, when no
        write of this process is under way."""
        removed = 0
        for leftover in self.path.parent.glob(f".{self.path.name}.*"):
            try:
                leftover.unlink()
                removed += 1
            except OSError as exc:
                logger.warning("could not remove the leftover {}: {}", leftover, exc)
        if removed:
            logger.info("removed {} unfinished copy(ies) of {}", removed, self.path)
        return removed

    def read(self) -> dict[str, Any]:
        """What the file holds; empty when it is missing or unreadable (logged)."""
        if not self.path.is_file():
            return {}
        try:
            saved = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            logger.warning("{} is unreadable, starting fresh: {}", self.path, exc)
            return {}
        return saved if isinstance(saved, dict) else {}

    def dirty(self) -> None:
        """Write soon, in the background; changes meanwhile go out in the same write."""
        self._dirty = True
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        while self._dirty:
            self._dirty = False
            await self.write_now()
            if self.min_interval and not self._hurry.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._hurry.wait(), self.min_interval)

    async def write_now(self) -> None:
        """Write what the snapshot holds now, off the event loop; failures are kept in `problem`."""
        data = self.snapshot()
        try:
            await asyncio.to_thread(write_atomically, self.path, data)
        except OSError as exc:
            if self.problem is None:
                logger.warning("could not write {}: {}", self.path, exc)
            self.problem = f"cannot be written ({exc.strerror or exc.__class__.__name__})"
        else:
            self.problem = None

    async def flush(self) -> None:
        """Finish pending writes now (shutdown); a write already under way is waited for, never
        raced, so an older snapshot cannot land after a newer one."""
        self._hurry.set()
        if self._task is not None:
            await self._task
        if self._dirty:
            self._dirty = False
            await self.write_now()


def write_atomically(path: Path, data: dict[str, Any]) -> None:
    """Write JSON to a temporary file beside `path` (owner-only), then rename it over `path`:
    readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, separators=(",", ":"))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
