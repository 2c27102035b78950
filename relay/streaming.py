"""The client side of a stream, shared by both client APIs: headers, heartbeats, in-band errors, shutdown."""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from typing import Protocol

from aiohttp import web
from loguru import logger

from .config import SessionSpec
from .errors import RelayError, UpstreamError
from .failures import UpstreamFailure
from .keys import AccessLog, access_key, streams_key
from .live_stream import LiveStream
from .reply import Finish, ReplyEvent
from .service import ChatJob, ChatService, Reply

SHUTDOWN_MESSAGE = "the relay is shutting down; the answer was cut"


class StreamFormat(Protocol):
    """How one client API writes an answer; everything else about streaming is shared."""

    @property
    def stopped(self) -> bool:
        """A stop sequence was reached: stop reading the upstream."""
        ...

    def opening(self) -> bytes: ...

    def feed(self, event: ReplyEvent) -> bytes: ...

    def closing(self, reason: str) -> bytes: ...

    def error(self, exc: RelayError) -> bytes: ...

    @property
    def output_tokens(self) -> int:
        """Estimated tokens written so far."""
        ...


def served(access: AccessLog, reply: Reply) -> None:
    """Note the serving account and time to first byte for the request's log line."""
    access.account = reply.account.alias
    access.ttfb_ms = (reply.first_byte_at - access.started) * 1000


async def run_stream(
    request: web.Request,
    service: ChatService,
    job: ChatJob,
    guest: SessionSpec | None,
    fmt: StreamFormat,
    heartbeat: float,
) -> web.StreamResponse:
    """Stream one answer: status decided before the first byte, failures after it reported in-band."""
    access = request[access_key]
    streams = request.app[streams_key]
    stream = LiveStream(heartbeat)
    streams.add(stream)
    stream.start_later(request, heartbeat)
    try:
        try:
            async with service.open(job, guest=guest) as reply:
                await stream.settle()
                served(access, reply)
                await stream.start(request)
                try:
                    access.outcome = await _pump(stream, reply, fmt)
                finally:
                    access.tokens_out = fmt.output_tokens
        except RelayError as exc:
            await stream.settle()
            if not stream.response.prepared:
                raise
            access.outcome = "failed"
            await stream.send_last(fmt.error(exc))
        except ConnectionResetError:
            raise
        except Exception:
            # A bug must not leave a half-written HTTP response: after the headers, end in-band.
            if not stream.response.prepared:
                raise
            logger.exception("stream failed")
            access.outcome = "failed"
            await stream.send_last(fmt.error(RelayError("internal error; see the relay's log")))
        return stream.response
    except ConnectionResetError:
        access.outcome = "client_gone"
        return stream.response
    except asyncio.CancelledError:
        if not (stream.shutting_down and stream.response.prepared):
            access.outcome = "client_gone"
            raise
        # Our own shutdown cancelled this stream: end it properly with one error frame.
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        access.outcome = "shutdown"
        await _try_send(stream, fmt.error(UpstreamError(SHUTDOWN_MESSAGE, code="shutting_down")))
        return stream.response
    finally:
        streams.discard(stream)
        await stream.close()


async def _pump(stream: LiveStream, reply: Reply, fmt: StreamFormat) -> str:
    """Copy the answer to the client, one write per upstream read, until its end or a stop sequence."""
    reason = ""
    out = [fmt.opening()]  # goes out with the first batch: one write, not two
    try:
        async with aclosing(reply.batches()) as batches:
            async for batch in batches:
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
                if reason:
                    await stream.send_last(b"".join(out))
                    return "done"
                if data := b"".join(out):
                    await stream.send(data)
                out = []
    except UpstreamFailure as failure:
        # Output already reached the client: retrying would duplicate it, so report in-band.
        logger.warning("stream broke after output on {}: {}", reply.account.alias, failure.message)
        await stream.send_last(b"".join(out) + fmt.error(UpstreamError(f"claude.ai stream failed mid-answer: {failure.message}")))
        return "upstream_error"
    await stream.send_last(b"".join(out) + fmt.closing("end_turn"))
    return "done"


async def _try_send(stream: LiveStream, frame: bytes) -> None:
    """A last frame for a stream being cut; it may already be gone."""
    try:
        async with asyncio.timeout(1):
            await stream.send(frame)
    except (ConnectionResetError, TimeoutError, RuntimeError):
        pass
