"""A loop that runs beside the request path until stopped (quota polling, session sweeping)."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod


class BackgroundLoop(ABC):
    """`start()` runs `_run()` as a task; `stop()` cancels it and waits until it has ended."""

    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    @abstractmethod
    async def _run(self) -> None: ...
