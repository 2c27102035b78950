"""Getting an answer to the client, shared by both client APIs: pool first, fallbacks when it cannot
serve, headers only once the answer has started, failures after that reported in-band."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from loguru import logger

from ..claude.failures import UpstreamFailure
from ..config import SessionSpec
from ..errors import RelayError, UpstreamError
from ..fallback import Answer, Ask, NoFallback
from ..render import Renderer
from ..reply import Finish, ReplyEvent
from ..service import ChatJob
from .keys import AccessLog, access_key, fallbacks_key, service_key, settings_key, streams_key
from .live_stream import LiveStream

SHUTDOWN_MESSAGE = "the relay is shutting down; the answer was cut"
PROVIDER_HEADER = "x-relay-provider"
POOL_PROVIDER = "claude.ai"


@dataclass(slots=True)
class Delivery:
    """One request to answer: the job for the pool, the same request for fallbacks."""

    request: web.Request
    job: ChatJob
    ask: Ask
    guest: SessionSpec | None
    # Keeps a finished answer (the Responses API's memory); runs before its last frame is sent,
    # so a client that continues at once finds it.
    keep: Callable[[], Awaitable[None]]

    @property
    def access(self) -> AccessLog:
        return self.request[access_key]

    def fallback_allowed(self, exc: RelayError) -> bool:
        """Only when the pool could not serve (never for a bad request, never in mirror mode)."""
        settings = self.request.app[settings_key]
        return exc.retryable and self.guest is None and settings.fallback_mode != "off" and bool(settings.fallbacks)

    def served_by(self, who: str, started_at: float, attempts: int = 1) -> None:
        self.access.account = who
        self.access.attempts = attempts
        self.access.ttfb_ms = (started_at - self.access.started) * 1000


async def complete(d: Delivery, renderer: Renderer) -> web.Response:
    """A whole answer as one JSON body."""
    service = d.request.app[service_key]
    try:
        async with service.open(d.job, guest=d.guest, buffered=True) as reply:
            d.served_by(reply.alias, reply.first_byte_at, reply.attempts)
            body = renderer.complete(reply.head)
        headers = {PROVIDER_HEADER: POOL_PROVIDER}
    except RelayError as exc:
        if not d.fallback_allowed(exc):
            raise
        try:
            async with d.request.app[fallbacks_key].open(d.ask) as answer:
                d.served_by(f"fallback:{answer.provider}", time.monotonic())
                if answer.body is not None:
                    body = answer.body
                else:
                    assert answer.events is not None
                    body = renderer.complete([e async for batch in answer.events for e in batch])
                headers = {PROVIDER_HEADER: answer.provider}
        except NoFallback:
            raise exc from None
    await d.keep()
    d.access.outcome = "done"
    d.access.tokens_out = renderer.output_tokens
    return web.json_response(body, headers=headers)


async def stream(d: Delivery, fmt: Renderer) -> web.StreamResponse:
    """Stream one answer: status decided before the first byte, failures after it reported in-band."""
    request, access = d.request, d.access
    settings = request.app[settings_key]
    streams = request.app[streams_key]
    live = LiveStream(settings.heartbeat_interval)
    streams.add(live)
    live.start_later(request, settings.heartbeat_interval)
    try:
        try:
            async with request.app[service_key].open(d.job, guest=d.guest) as reply:
                await live.settle()
                d.served_by(reply.alias, reply.first_byte_at, reply.attempts)
                live.response.headers[PROVIDER_HEADER] = POOL_PROVIDER
                await live.start(request)
                try:
                    access.outcome = await _pump(live, reply.batches(), fmt, reply.alias, d.keep)
                finally:
                    access.tokens_out = fmt.output_tokens
        except RelayError as exc:
            await live.settle()
            if d.fallback_allowed(exc):
                try:
                    async with request.app[fallbacks_key].open(d.ask) as answer:
                        access.outcome = await _from_fallback(d, live, answer, fmt)
                        return live.response
                except NoFallback:
                    pass
            if not live.response.prepared:
                raise
            access.outcome = "failed"
            await live.send_last(fmt.error(exc))
        except ConnectionResetError:
            raise
        except Exception:
            # A bug must not leave a half-written HTTP response: after the headers, end in-band.
            if not live.response.prepared:
                raise
            logger.exception("stream failed")
            access.outcome = "failed"
            await live.send_last(fmt.error(RelayError("internal error; see the relay's log")))
        return live.response
    except ConnectionResetError:
        access.outcome = "client_gone"
        return live.response
    except asyncio.CancelledError:
        if not (live.shutting_down and live.response.prepared):
            access.outcome = "client_gone"
            raise
        # Our own shutdown cancelled this stream: end it properly with one error frame.
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        access.outcome = "shutdown"
        await _try_send(live, fmt.error(UpstreamError(SHUTDOWN_MESSAGE, code="shutting_down")))
        return live.response
    finally:
        streams.discard(live)
        await live.close()


async def _from_fallback(d: Delivery, live: LiveStream, answer: Answer, fmt: Renderer) -> str:
    """A fallback's answer: its own bytes when it speaks the client's API, else our framing of its events."""
    d.served_by(f"fallback:{answer.provider}", time.monotonic())
    if not live.response.prepared:
        live.response.headers[PROVIDER_HEADER] = answer.provider
    await live.start(d.request)
    try:
        if answer.raw is not None:
            async for chunk in answer.raw:
                await live.send(chunk)
            live.response.stop_streaming()
            return "done"
        assert answer.events is not None
        try:
            return await _pump(live, answer.events, fmt, f"fallback:{answer.provider}", d.keep)
        finally:
            d.access.tokens_out = fmt.output_tokens
    except aiohttp.ClientError as exc:
        logger.warning("fallback {} broke mid-answer: {}", answer.provider, exc.__class__.__name__)
        await live.send_last(fmt.error(UpstreamError(f"fallback {answer.provider} failed mid-answer")))
        return "upstream_error"


async def _pump(
    live: LiveStream,
    batches: AsyncGenerator[list[ReplyEvent], None],
    fmt: Renderer,
    source: str,
    keep: Callable[[], Awaitable[None]],
) -> str:
    """Copy the answer to the client, one write per upstream read, until its end or a stop sequence."""
    reason = ""
    out = [fmt.opening()]  # goes out with the first batch: one write, not two
    try:
        async with aclosing(batches) as events:
            async for batch in events:
                for event in batch:
                    if isinstance(event, Finish):
                        reason = event.reason
                        break
                    out.append(fmt.feed(event))
                    if fmt.stopped:
                        reason = "stop_sequence"
                        break
                if reason:
                    out.append(fmt.closing(reason))
                    await keep()
                    await live.send_last(b"".join(out))
                    return "done"
                if data := b"".join(out):
                    await live.send(data)
                out = []
    except UpstreamFailure as failure:
        # Output already reached the client: retrying would duplicate it, so report in-band.
        logger.warning("stream broke after output on {}: {}", source, failure.message)
        await live.send_last(b"".join(out) + fmt.error(UpstreamError(f"claude.ai stream failed mid-answer: {failure.message}")))
        return "upstream_error"
    out.append(fmt.closing("end_turn"))
    await keep()
    await live.send_last(b"".join(out))
    return "done"


async def _try_send(live: LiveStream, frame: bytes) -> None:
    """A last frame for a stream being cut; it may already be gone."""
    try:
        async with asyncio.timeout(1):
            await live.send(frame)
    except (ConnectionResetError, TimeoutError, RuntimeError):
        pass
