"""The client side of a stream: SSE headers, heartbeats during upstream silence, shutdown bookkeeping."""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp_sse import EventSourceResponse


class LiveStream:
    """One streaming response. Headers go out only after the upstream answer has started."""

    __slots__ = ("response", "task", "shutting_down", "__weakref__")

    def __init__(self, heartbeat: float) -> None:
        # aiohttp-sse writes a `: ping` comment every `heartbeat` seconds, which keeps proxies and
        # clients from timing out while claude.ai thinks; clients ignore comment lines.
        self.response = EventSourceResponse(allow_all_methods=True, sep="\n", ping_interval=heartbeat)
        self.task = asyncio.current_task()
        self.shutting_down = False

    async def start(self, request: web.Request) -> None:
        await self.response.prepare(request)

    async def send(self, data: bytes) -> None:
        await self.response.write(data)

    async def close(self) -> None:
        """Stop heartbeats; the handler returns the response and aiohttp ends the body."""
        if self.response.prepared:
            self.response.stop_streaming()
            await self.response.wait()
