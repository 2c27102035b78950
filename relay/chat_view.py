"""POST /v1/chat/completions: OpenAI requests in, OpenAI chunks or a completion out."""

from __future__ import annotations

import asyncio
from contextlib import aclosing

from aiohttp import web
from loguru import logger

from .config import SessionSpec
from .errors import UpstreamError
from .failures import UpstreamFailure
from .keys import access_key, guest_key, service_key, settings_key, streams_key
from .models import ChatRequest, parse_request
from .openai_format import ChunkEncoder, FinishReason, ThinkTags, completion_object, error_frame, finish_reason
from .prompt import build_prompt
from .reply import Finish, StopCutter, Text, Thinking, estimate_tokens
from .service import ChatJob, Reply
from .sse import DONE
from .streaming import LiveStream
from .views import read_json, resolve_model

SHUTDOWN_MESSAGE = "the relay is shutting down; the answer was cut"


def _job(request: web.Request, req: ChatRequest) -> ChatJob:
    settings = request.app[settings_key]
    model, thinking = resolve_model(settings, req.model)
    prompt = build_prompt(
        req.messages,
        no_role_prefix=settings.no_role_prefix,
        disable_artifacts=settings.prompt_disable_artifacts,
        max_history=settings.max_chat_history_length,
    )
    return ChatJob(model=model, thinking=thinking, prompt=prompt, artifacts=not settings.prompt_disable_artifacts)


def _prompt_tokens(job: ChatJob) -> int:
    return estimate_tokens(len(job.prompt.text) + sum(len(a.content) for a in job.prompt.attachments))


def _served(request: web.Request, reply: Reply) -> None:
    access = request[access_key]
    access.account = reply.account.alias
    access.ttfb_ms = (reply.first_byte_at - access.started) * 1000


async def chat_completions(request: web.Request) -> web.StreamResponse:
    req = parse_request(ChatRequest, await read_json(request))
    request[access_key].model = req.model
    job = _job(request, req)
    guest = request.get(guest_key)
    if req.stream:
        return await _stream(request, req, job, guest)
    return await _complete(request, req, job, guest)


async def _complete(request: web.Request, req: ChatRequest, job: ChatJob, guest: SessionSpec | None) -> web.Response:
    settings = request.app[settings_key]
    tags = ThinkTags(settings.thinking_format)
    cutter = StopCutter(req.stop_sequences)
    content: list[str] = []
    reasoning: list[str] = []
    reason: FinishReason = "stop"
    async with request.app[service_key].open(job, guest=guest, buffered=True) as reply:
        _served(request, reply)
        for event in reply.head:
            if isinstance(event, Finish):
                reason = finish_reason(event.reason)
            elif isinstance(event, (Text, Thinking)) and not cutter.stopped:
                text = event.text if isinstance(event, Thinking) else cutter.feed(event.text)
                c, r = tags.split(text, isinstance(event, Thinking))
                content.append(c)
                reasoning.append(r)
    content.append(cutter.flush() + tags.close())
    if cutter.stopped:
        reason = "stop"
    text, thought = "".join(content), "".join(reasoning)
    request[access_key].outcome = "done"
    body = completion_object(req.model, text, thought, reason, _prompt_tokens(job), estimate_tokens(len(text) + len(thought)))
    return web.json_response(body)


async def _stream(request: web.Request, req: ChatRequest, job: ChatJob, guest: SessionSpec | None) -> web.StreamResponse:
    settings = request.app[settings_key]
    stream = LiveStream(settings.heartbeat_interval)
    encoder = ChunkEncoder(req.model)
    tags = ThinkTags(settings.thinking_format)
    cutter = StopCutter(req.stop_sequences)
    sent_chars = 0
    reason: FinishReason = "stop"
    streams = request.app[streams_key]
    try:
        async with request.app[service_key].open(job, guest=guest) as reply:
            _served(request, reply)
            await stream.start(request)
            streams.add(stream)
            await stream.send(encoder.role())
            try:
                async with aclosing(reply.events()) as events:
                    async for event in events:
                        if isinstance(event, Finish):
                            reason = finish_reason(event.reason)
                            break
                        thinking = isinstance(event, Thinking)
                        text = event.text if thinking else cutter.feed(event.text)  # type: ignore[union-attr]
                        if not text:
                            if cutter.stopped:
                                break
                            continue
                        content, reasoning = tags.split(text, thinking)
                        sent_chars += len(content) + len(reasoning)
                        await stream.send(encoder.delta(content, reasoning))
                        if cutter.stopped:
                            break
            except UpstreamFailure as failure:
                # Output already reached the client: retrying would duplicate it, so report in-band.
                request[access_key].outcome = "upstream_error"
                logger.warning("stream broke after output on {}: {}", reply.account.alias, failure.message)
                await stream.send(error_frame(UpstreamError(f"claude.ai stream failed mid-answer: {failure.message}")))
                return stream.response
        tail = cutter.flush() + tags.close()
        frames = [encoder.delta(tail)] if tail else []
        frames.append(encoder.finish("stop" if cutter.stopped else reason))
        if req.stream_options and req.stream_options.include_usage:
            frames.append(encoder.usage(_prompt_tokens(job), estimate_tokens(sent_chars + len(tail))))
        frames.append(DONE)
        await stream.send(b"".join(frames))
        request[access_key].outcome = "done"
        return stream.response
    except ConnectionResetError:
        request[access_key].outcome = "client_gone"
        return stream.response
    except asyncio.CancelledError:
        request[access_key].outcome = "shutdown" if stream.shutting_down else "client_gone"
        if stream.shutting_down and stream.response.prepared:
            await _try_send(stream, error_frame(UpstreamError(SHUTDOWN_MESSAGE, code="shutting_down")))
        raise
    finally:
        streams.discard(stream)
        await stream.close()


async def _try_send(stream: LiveStream, frame: bytes) -> None:
    """A last frame for a stream being cut; it may already be gone."""
    try:
        async with asyncio.timeout(1):
            await stream.send(frame)
    except (ConnectionResetError, TimeoutError, RuntimeError):
        pass

