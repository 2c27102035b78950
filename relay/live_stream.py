"""One client SSE response: early headers, heartbeats, and the task serving it (for shutdown)."""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp_sse import EventSourceResponse


class LiveStream:
    """One streaming response and the task serving it (for shutdown)."""

    __slots__ = ("response", "task", "shutting_down", "_starting", "__weakref__")

    def __init__(self, heartbeat: float) -> None:
        # aiohttp-sse writes a `: ping` comment every `heartbeat` seconds, which keeps proxies and
        # clients from timing out while claude.ai is silent; clients ignore comment lines.
        self.response = EventSourceResponse(allow_all_methods=True, sep="\n", ping_interval=heartbeat)
        self.task = asyncio.current_task()
        self.shutting_down = False
        self._starting: asyncio.Task[None] | None = None

    async def start(self, request: web.Request) -> None:
        if not self.response.prepared:
            await self.response.prepare(request)

    def start_later(self, request: web.Request, delay: float) -> None:
        """Send headers (and then heartbeats) if the answer has not started within `delay` seconds.

        Until then failures are plain HTTP errors with their real status; after it, failover still
        goes on silently and only a final failure is reported in-band.
        """

        async def later() -> None:
            await asyncio.sleep(delay)
            await self.start(request)

        self._starting = asyncio.create_task(later())

    async def settle(self) -> None:
        """Cancel a pending early start, or let one that already began sending headers finish."""
        task, self._starting = self._starting, None
        if task is None:
            return
        if not self.response.prepared and not task.done():
            task.cancel()
        await asyncio.wait([task])
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]

    async def send(self, data: bytes) -> None:
        await self.response.write(data)

    async def close(self) -> None:
        """Stop heartbeats; the handler returns the response and aiohttp ends the body."""
        await self.settle()
        if self.response.prepared:
            self.response.stop_streaming()
            await self.response.wait()
