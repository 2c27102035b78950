"""One client SSE response: early headers, heartbeats, and the task serving it (for shutdown)."""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp_sse import EventSourceResponse


class LiveStream:
    """One streaming response and the task serving it (for shutdown)."""

    __slots__ = ("__weakref__", "_starting", "_timer", "response", "shutting_down", "task")

    def __init__(self, heartbeat: float) -> None:
        # aiohttp-sse writes a `: ping` comment every `heartbeat` seconds, which keeps proxies and
        # clients from timing out while claude.ai is silent; clients ignore comment lines.
        self.response = EventSourceResponse(allow_all_methods=True, sep="\n", ping_interval=heartbeat)
        self.task = asyncio.current_task()
        self.shutting_down = False
        self._timer: asyncio.TimerHandle | None = None
        self._starting: asyncio.Future[None] | None = None

    async def start(self, request: web.Request) -> None:
        if not self.response.prepared:
            await self.response.prepare(request)

    def start_later(self, request: web.Request, delay: float) -> None:
        """Send headers (and then heartbeats) if the answer has not started within `delay` seconds.

        Until then failures are plain HTTP errors with their real status; after it, failover still
        goes on silently and only a final failure is reported in-band. A timer, not a task, so the
        common case (the answer starts in time) costs nothing to cancel.
        """

        def fire() -> None:
            self._starting = asyncio.ensure_future(self.start(request))

        self._timer = asyncio.get_running_loop().call_later(delay, fire)

    async def settle(self) -> None:
        """Cancel a pending early start, or let one that already began sending headers finish."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        task, self._starting = self._starting, None
        if task is not None:
            await task

    async def send(self, data: bytes) -> None:
        await self.response.write(data)

    async def send_last(self, data: bytes) -> None:
        """The final frames: heartbeats stop first so nothing follows them."""
        self.response.stop_streaming()
        await self.response.write(data)

    async def close(self) -> None:
        """Stop heartbeats; the handler returns the response and aiohttp ends the body."""
        await self.settle()
        if self.response.prepared:
            self.response.stop_streaming()
            await self.response.wait()
