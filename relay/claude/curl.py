"""The one place that reaches past curl_cffi's public API.

curl_cffi's streamed responses offer no way to abort a transfer at once (its `aclose()` waits for
the upstream to finish) nor to take several queued network reads in one step, and every handle
carries a 128 KB WebSocket buffer. relay needs all three, so it uses these private attributes,
and only here; `missing_internals()` is checked by a test so a curl_cffi upgrade that moves them
fails loudly instead of leaking connections.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
from collections.abc import AsyncIterator

from curl_cffi import Curl
from curl_cffi.requests import Response
from curl_cffi.requests.streams import STREAM_END

from ..config import ConfigError

# Queued network reads joined into one chunk at most; bounds the buffer one stream holds at once.
MAX_COALESCED = 64 * 1024
# relay never opens WebSockets; curl_cffi zero-fills this buffer for every handle it creates.
WS_BUFFER_BYTES = 64
_RESPONSE_INTERNALS = ("astream_task", "quit_now", "queue")


def missing_internals() -> list[str]:
    """The private names this module relies on that the installed curl_cffi lacks."""
    missing = [] if hasattr(Curl, "_WS_RECV_BUFFER_SIZE") else ["Curl._WS_RECV_BUFFER_SIZE"]
    probe = Response()
    return missing + [f"Response.{name}" for name in _RESPONSE_INTERNALS if not hasattr(probe, name)]


def require_internals() -> None:
    """Refuse to start on a curl_cffi whose internals relay cannot use: streams would leak
    connections instead of failing loudly."""
    if missing := missing_internals():
        found = importlib.metadata.version("curl_cffi")
        raise ConfigError(f"curl_cffi {found} lacks {', '.join(missing)}; install curl-cffi>=0.16,<0.17 (see constraints.txt)")


def shrink_ws_buffer() -> None:
    """At 1,000 concurrent streams the default buffer alone would be 128 MB."""
    if getattr(Curl, "_WS_RECV_BUFFER_SIZE", 0) > WS_BUFFER_BYTES:
        Curl._WS_RECV_BUFFER_SIZE = WS_BUFFER_BYTES


def body_chunks(rsp: Response) -> AsyncIterator[bytes]:
    """A streamed response's body, as curl_cffi's (untyped) `aiter_content` gives it."""
    chunks: AsyncIterator[bytes] = rsp.aiter_content()  # type: ignore[no-untyped-call]
    return chunks


class CurlStream:
    """A streamed curl_cffi response: its body in coalesced chunks, and an abort that is immediate."""

    __slots__ = ("rsp",)

    def __init__(self, rsp: Response) -> None:
        self.rsp = rsp

    async def chunks(self, idle: float) -> AsyncIterator[bytes]:
        """The body like aiter_content, but what curl has already queued comes as one chunk: under
        load that means one decode pass and one client write for many network reads.

        Raises TimeoutError after `idle` seconds without data (curl's own low-speed check averages
        over several seconds, so it notices a stall mid-answer late)."""
        queue = self.rsp.queue
        assert queue is not None
        while True:
            async with asyncio.timeout(idle):
                item = await queue.get()
            parts: list[bytes] = []
            size = 0
            while isinstance(item, bytes):
                parts.append(item)
                size += len(item)
                if queue.empty() or size >= MAX_COALESCED:
                    break
                item = queue.get_nowait()
            if parts:
                yield b"".join(parts)
            if item is STREAM_END:
                return
            if isinstance(item, BaseException):
                raise item

    async def finish(self, wait: float) -> None:
        """Let the end of the body arrive (so the connection goes back to the pool), then abort."""
        task = self._task()
        if task is not None and not task.done():
            await asyncio.wait([task], timeout=wait)
        await self.abort()

    async def abort(self) -> None:
        """Stop the transfer now; cancelling it removes the handle from curl's multi and closes the connection."""
        task = self._task()
        if task is None or task.done():
            return
        if self.rsp.quit_now is not None:
            self.rsp.quit_now.set()
        task.cancel()
        await asyncio.wait([task])

    def _task(self) -> asyncio.Task[None] | None:
        return self.rsp.astream_task  # type: ignore[return-value]
