"""One client SSE response: early headers, heartbeats, and a stop for shutdown."""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp_sse import EventSourceResponse


class LiveStream:
    """One streaming response; `stop()` asks whoever pumps it to end it (shutdown)."""

    __slots__ = ("__weakref__", "_started", "_starting", "_timer", "ended", "pump", "response", "stopped")

    def __init__(self, heartbeat: float) -> None:
        # aiohttp-sse writes a `: ping` comment every `heartbeat` seconds, which keeps proxies and
        # clients from timing out while claude.ai is silent; clients ignore comment lines.
        self.response = EventSourceResponse(allow_all_methods=True, sep="\n", ping_interval=heartbeat)
        self.stopped = False  # shutdown asked for the stream to end
        self.pump: asyncio.Future[str] | None = None  # the task copying the answer, once it runs
        # Done when the handler is through with it (shutdown waits for this); a future, not an
        # Event: one per open stream, and a future is a fraction of the size.
        self.ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._timer: asyncio.TimerHandle | None = None
        self._starting: asyncio.Future[None] | None = None
        # Headers written and heartbeats running. `response.prepared` alone is not enough: it is
        # already true when a client that left makes writing the headers fail.
        self._started = False

    @property
    def started(self) -> bool:
        """Headers went out: from now on every failure is reported in-band."""
        return self._started

    def stop(self) -> None:
        """Shutdown: the pump is cancelled (or never starts) and the stream ends with one error frame."""
        self.stopped = True
        if self.pump is not None:
            self.pump.cancel()

    async def start(self, request: web.Request) -> None:
        if not self.response.prepared:
            await self.response.prepare(request)
            self._started = True

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
        if self._started:
            self.response.stop_streaming()
        await self.response.write(data)

    async def close(self) -> None:
        """Stop heartbeats; the handler returns the response and aiohttp ends the body."""
        if not self.ended.done():
            self.ended.set_result(None)
        try:
            await self.settle()
        except ConnectionError:
            pass  # the client left while early headers were being written
        if self._started:
            self.response.stop_streaming()
            await self.response.wait()
