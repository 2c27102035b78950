"""Getting an answer to the client, for every client API: first choose where it comes from (the
pool, else a fallback provider) before any byte goes out, then pump it; headers only once the
answer has started, failures after that reported in-band."""

from __future__ import annotations

import asyncio
import functools
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from loguru import logger

from ..chat.answer import ChatAnswer
from ..chat.job import ChatJob
from ..chat.service import ChatService
from ..claude.failures import UpstreamFailure
from ..config import SessionSpec, Settings
from ..errors import RelayError, UpstreamError
from ..fallback import Ask, FallbackAnswer, Fallbacks, NoFallback
from ..render import Renderer
from ..reply import ReplyEvent
from .access import AccessLog
from .live_stream import LiveStream

SHUTDOWN_MESSAGE = "the relay is shutting down; the answer was cut"
PROVIDER_HEADER = "x-relay-provider"

Chosen = ChatAnswer | FallbackAnswer


@dataclass(slots=True)
class Order:
    """One request to answer: the job for the pool, the same request for fallbacks."""

    job: ChatJob
    ask: Ask
    guest: SessionSpec | None
    access: AccessLog
    # Keeps a finished answer (the Responses API's memory); runs before its last frame is sent,
    # so a client that continues at once finds it.
    remember: Callable[[], Awaitable[None]]


class Delivery:
    """Answers orders, whole or streamed; built with everything it uses."""

    def __init__(
        self, service: ChatService, fallbacks: Fallbacks, settings: Settings, streams: weakref.WeakSet[LiveStream]
    ) -> None:
        self.service = service
        self.fallbacks = fallbacks
        self.settings = settings
        self.streams = streams

    def _fallback_allowed(self, order: Order, exc: RelayError) -> bool:
        """Only when the pool could not serve (never for a bad request, never in mirror mode)."""
        s = self.settings
        return exc.retryable and order.guest is None and s.fallback_mode != "off" and bool(s.fallbacks)

    async def choose(self, order: Order, *, buffered: bool) -> Chosen:
        """Where the answer comes from, decided before the first byte: an answer that has started
        on the pool, else the first fallback provider that answers."""
        try:
            chosen: Chosen = await self.service.start(order.job, guest=order.guest, buffered=buffered)
        except RelayError as exc:
            if not self._fallback_allowed(order, exc):
                raise
            try:
                chosen = await self.fallbacks.start(order.ask)
            except NoFallback:
                raise exc from None
        attempts = chosen.attempts if isinstance(chosen, ChatAnswer) else 1
        order.access.served_by(chosen.alias, chosen.first_byte_at, attempts)
        if isinstance(chosen, ChatAnswer):
            order.access.session = chosen.session
        return chosen

    async def complete(self, order: Order, renderer: Renderer) -> web.Response:
        """A whole answer as one JSON body."""
        chosen = await self.choose(order, buffered=True)
        try:
            if isinstance(chosen, FallbackAnswer) and chosen.body is not None:
                body = chosen.body
            else:
                body = await renderer.complete(chosen.batches())
            await _before_the_end(chosen, order.remember)
        finally:
            await chosen.aclose()
        order.access.outcome = "done"
        order.access.tokens_out = renderer.output_tokens
        return web.json_response(body, headers={PROVIDER_HEADER: chosen.provider})

    async def stream(self, request: web.Request, order: Order, fmt: Renderer) -> web.StreamResponse:
        """Stream one answer: status decided before the first byte, failures after it reported in-band."""
        live = LiveStream(self.settings.heartbeat_interval)
        self.streams.add(live)
        live.start_later(request, self.settings.heartbeat_interval)
        try:
            order.access.outcome = await self._stream(request, live, order, fmt)
        except ConnectionError:
            order.access.outcome = "client_gone"  # nobody is left to answer
        except asyncio.CancelledError:
            order.access.outcome = "client_gone"
            raise
        except Exception:
            # A bug must not leave a half-written HTTP response: after the headers, end in-band.
            if not live.started:
                raise
            logger.exception("stream failed")
            order.access.outcome = "failed"
            await _try_send(live, fmt.error(RelayError("internal error; see the relay's log")))
        finally:
            order.access.tokens_out = fmt.output_tokens
            self.streams.discard(live)
            await live.close()
        return live.response

    async def _stream(self, request: web.Request, live: LiveStream, order: Order, fmt: Renderer) -> str:
        try:
            chosen = await self.choose(order, buffered=False)
        except RelayError as exc:
            await live.settle()
            if not live.response.prepared:
                raise
            await live.send_last(fmt.error(exc))  # the early headers went out: report in-band
            return "failed"
        try:
            await live.settle()
            if not live.response.prepared:
                live.response.headers[PROVIDER_HEADER] = chosen.provider
            await live.start(request)
            remember = functools.partial(_before_the_end, chosen, order.remember)
            return await _pump_until_stopped(live, chosen, fmt, remember)
        finally:
            await chosen.aclose()


async def _before_the_end(chosen: Chosen, remember: Callable[[], Awaitable[None]]) -> None:
    """What must be kept before the client sees the answer's end, so its next request finds it:
    the Responses API's answer, and where the answer left its session's chat."""
    await remember()
    if isinstance(chosen, ChatAnswer):
        await chosen.keep_session()


async def _pump_until_stopped(live: LiveStream, chosen: Chosen, fmt: Renderer, remember: Callable[[], Awaitable[None]]) -> str:
    """Pump in a task of its own, which a shutdown's `live.stop()` cancels; the stream then ends
    with one error frame. When the handler itself is cancelled (the client left), awaiting the
    pump cancels it too, and the cancellation goes on up."""
    if not live.stopped:
        pump = live.pump = asyncio.ensure_future(_pump(live, chosen, fmt, remember))
        try:
            return await pump
        except asyncio.CancelledError:
            handler = asyncio.current_task()
            if not pump.cancelled() or (handler is not None and handler.cancelling()):
                raise
    await _try_send(live, fmt.unsent + fmt.error(UpstreamError(SHUTDOWN_MESSAGE, code="shutting_down")))
    return "shutdown"


async def _pump(live: LiveStream, chosen: Chosen, fmt: Renderer, remember: Callable[[], Awaitable[None]]) -> str:
    """Copy the answer to the client: its own bytes when a fallback speaks the client's API, else
    our frames of its events."""
    if isinstance(chosen, FallbackAnswer) and chosen.raw is not None:
        return await _pass_through(live, chosen.provider, chosen.raw, fmt)
    try:
        return await _copy(live, chosen.batches(), fmt, remember)
    except UpstreamFailure as failure:
        # Output already reached the client: retrying would duplicate it, so report in-band.
        logger.warning("stream broke after output on {}: {}", chosen.alias, failure.message)
        await live.send_last(fmt.unsent + fmt.error(UpstreamError(f"claude.ai stream failed mid-answer: {failure.message}")))
        return "upstream_error"
    except aiohttp.ClientError as exc:
        logger.warning("fallback {} broke mid-answer: {}", chosen.provider, exc.__class__.__name__)
        await live.send_last(fmt.unsent + fmt.error(UpstreamError(f"fallback {chosen.provider} failed mid-answer")))
        return "upstream_error"


async def _copy(
    live: LiveStream, batches: AsyncIterator[list[ReplyEvent]], fmt: Renderer, remember: Callable[[], Awaitable[None]]
) -> str:
    """One client write per upstream read, until the answer's end or a stop sequence."""
    async with aclosing(fmt.frames(batches)) as frames:
        async for data, last in frames:
            if last:
                await remember()
                await live.send_last(data)
                return "done"
            if data:
                await live.send(data)
    return "done"


async def _pass_through(live: LiveStream, provider: str, raw: AsyncIterator[bytes], fmt: Renderer) -> str:
    try:
        async for chunk in raw:
            await live.send(chunk)
    except aiohttp.ClientError as exc:
        logger.warning("fallback {} broke mid-answer: {}", provider, exc.__class__.__name__)
        await live.send_last(fmt.error(UpstreamError(f"fallback {provider} failed mid-answer")))
        return "upstream_error"
    return "done"


async def _try_send(live: LiveStream, frame: bytes) -> None:
    """A last frame for a stream being cut; it may already be gone."""
    try:
        async with asyncio.timeout(1):
            await live.send_last(frame)
    except (ConnectionError, TimeoutError, RuntimeError):
        pass
