"""Fallback providers: an OpenAI-compatible API or the Anthropic API answers when the pool cannot.

Same API on both sides: the provider's answer is passed through as it is. Across APIs the request
is rebuilt from relay's normalised conversation and the answer read into reply events, which the
client's own format then writes.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from loguru import logger

from .claude.events import EventReader
from .client_api import Wire
from .config import Fallback
from .conversation import Chat, ImagePart, Part, TextPart, Turn, parse_arguments
from .metrics import Metrics
from .reply import Finish, ReplyEvent, Text, Thinking, ToolCall
from .sse import SSEDecoder

ANTHROPIC_VERSION = "2023-06-01"
# Anthropic requires max_tokens; OpenAI requests often leave it out.
DEFAULT_MAX_TOKENS = 4096
# A provider gets this long to start answering before the next one is tried.
CONNECT_TIMEOUT = 15.0
_FINISH_FROM_OPENAI = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal"}


class NoFallback(Exception):
    """No provider is configured, or every one failed."""


@dataclass(slots=True)
class Ask:
    """A request for the providers: the neutral chat, and the client's own body for its own API."""

    wire: Wire | None
    body: dict[str, Any]
    chat: Chat


@dataclass(slots=True)
class FallbackAnswer:
    """What a provider answered: raw bytes or JSON to pass through, or events to write in the
    client's format. Holds the provider's response until `aclose()`."""

    provider: str
    response: aiohttp.ClientResponse
    raw: AsyncIterator[bytes] | None = None
    body: dict[str, Any] | None = None
    events: AsyncGenerator[list[ReplyEvent], None] | None = None
    first_byte_at: float = field(default_factory=time.monotonic)

    @property
    def alias(self) -> str:
        """Who served, as the access log names it."""
        return f"fallback:{self.provider}"

    def batches(self) -> AsyncIterator[list[ReplyEvent]]:
        """The answer as reply events, for the client's renderer (not for a pass-through)."""
        assert self.events is not None
        return self.events

    async def aclose(self) -> None:
        if self.events is not None:
            await self.events.aclose()
        self.response.release()


class Fallbacks:
    """Tries the configured providers in order."""

    def __init__(self, providers: tuple[Fallback, ...], metrics: Metrics) -> None:
        self.providers = providers
        self.metrics = metrics
        self._http: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def start(self, ask: Ask) -> FallbackAnswer:
        """The first provider that answers 2xx; each failure falls through to the next."""
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT))
        for provider in self.providers:
            url, headers, body = _request(provider, ask)
            try:
                response = await self._http.post(url, json=body, headers=headers)
            except (aiohttp.ClientError, TimeoutError) as exc:
                self._failed(provider, f"could not connect: {exc.__class__.__name__}")
                continue
            if response.status >= 300:
                detail = (await response.text())[:200]
                response.release()
                self._failed(provider, f"answered {response.status}: {detail}")
                continue
            self.metrics.fallbacks.labels(provider.name, "answered").inc()
            logger.info("fallback {} answers", provider.name)
            try:
                return await _answer(provider, ask, response)
            except BaseException:
                response.release()
                raise
        raise NoFallback

    def _failed(self, provider: Fallback, why: str) -> None:
        self.metrics.fallbacks.labels(provider.name, "failed").inc()
        logger.warning("fallback {} failed: {}", provider.name, why)


def _request(provider: Fallback, ask: Ask) -> tuple[str, dict[str, str], dict[str, Any]]:
    key = provider.key.get_secret_value()
    if provider.type == "openai":
        body = dict(ask.body) if ask.wire == "openai" else _openai_body(ask.chat)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        url = provider.url + "/chat/completions"
    else:
        body = dict(ask.body) if ask.wire == "anthropic" else _anthropic_body(ask.chat)
        headers = {"x-api-key": key, "anthropic-version": ANTHROPIC_VERSION}
        url = provider.url + "/v1/messages"
    body["model"] = provider.model or ask.chat.model
    return url, headers, body


async def _answer(provider: Fallback, ask: Ask, response: aiohttp.ClientResponse) -> FallbackAnswer:
    if provider.type == ask.wire:
        if ask.chat.stream:
            return FallbackAnswer(provider.name, response, raw=response.content.iter_any())
        return FallbackAnswer(provider.name, response, body=await response.json(content_type=None))
    if ask.chat.stream:
        reader = _openai_events if provider.type == "openai" else _anthropic_events
        return FallbackAnswer(provider.name, response, events=reader(response))
    doc = await response.json(content_type=None)
    events = _openai_reply(doc) if provider.type == "openai" else _anthropic_reply(doc)
    return FallbackAnswer(provider.name, response, events=_once(events))


async def _once(events: list[ReplyEvent]) -> AsyncGenerator[list[ReplyEvent], None]:
    yield events


# -- requests ---------------------------------------------------------------------------------------


def _data_url(media: str, data: bytes) -> str:
    return f"data:{media};base64,{base64.b64encode(data).decode()}"


def _openai_part(part: Part) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    if isinstance(part, ImagePart):
        url = part.url or _data_url(part.media_type or "image/png", part.data or b"")
        return {"type": "image_url", "image_url": {"url": url}}
    return {"type": "file", "file": {"filename": part.name, "file_data": _data_url(part.media_type, part.data)}}


def _openai_message(turn: Turn) -> dict[str, Any]:
    if turn.role == "tool":
        return {"role": "tool", "tool_call_id": turn.call_id or "", "content": ("[error] " if turn.is_error else "") + turn.text}
    only_text = all(isinstance(p, TextPart) for p in turn.parts)
    message: dict[str, Any] = {"role": turn.role, "content": turn.text if only_text else [_openai_part(p) for p in turn.parts]}
    if turn.calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in turn.calls
        ]
    return message


def _openai_body(chat: Chat) -> dict[str, Any]:
    """The chat as an OpenAI chat completion request."""
    body: dict[str, Any] = {
        "messages": [_openai_message(t) for t in chat.turns],
        "stream": chat.stream,
        "max_tokens": chat.max_tokens,
    }
    if chat.stops:
        body["stop"] = chat.stops
    if chat.tools and chat.tools.tools:
        body["tools"] = [
            {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}
            for t in chat.tools.tools
        ]
        forced = {"type": "function", "function": {"name": chat.tools.forced}} if chat.tools.forced else None
        body["tool_choice"] = forced or chat.tools.choice
    return {k: v for k, v in body.items() if v is not None}


def _anthropic_part(part: Part) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    if isinstance(part, ImagePart) and part.url:
        return {"type": "image", "source": {"type": "url", "url": part.url}}
    media = part.media_type or ("image/png" if isinstance(part, ImagePart) else "application/pdf")
    source = {"type": "base64", "media_type": media, "data": base64.b64encode(part.data or b"").decode()}
    return {"type": "image" if isinstance(part, ImagePart) else "document", "source": source}


def _anthropic_body(chat: Chat) -> dict[str, Any]:
    """The chat as an Anthropic Messages request."""
    system: list[str] = []
    messages: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": blocks})

    for turn in chat.turns:
        if turn.role == "system":
            system.append(turn.text)
        elif turn.role == "tool":
            add(
                "user",
                [{"type": "tool_result", "tool_use_id": turn.call_id or "", "content": turn.text, "is_error": turn.is_error}],
            )
        else:
            blocks = [_anthropic_part(p) for p in turn.parts if not isinstance(p, TextPart) or p.text]
            blocks += [
                {"type": "tool_use", "id": c.id, "name": c.name, "input": parse_arguments(c.arguments) or {}} for c in turn.calls
            ]
            if blocks:
                add(turn.role, blocks)
    body: dict[str, Any] = {"messages": messages, "max_tokens": chat.max_tokens or DEFAULT_MAX_TOKENS, "stream": chat.stream}
    if system:
        body["system"] = "\n\n".join(system)
    if chat.stops:
        body["stop_sequences"] = chat.stops
    if chat.thinking:
        body["thinking"] = {"type": "enabled", "budget_tokens": max(1024, body["max_tokens"] // 2)}
    if chat.tools and chat.tools.tools:
        body["tools"] = [
            {"name": t.name, "description": t.description, "input_schema": t.parameters or {"type": "object"}}
            for t in chat.tools.tools
        ]
        if chat.tools.forced:
            body["tool_choice"] = {"type": "tool", "name": chat.tools.forced}
        else:
            body["tool_choice"] = {"type": {"auto": "auto", "required": "any", "none": "none"}[chat.tools.choice]}
    return body


# -- answers ----------------------------------------------------------------------------------------


def _openai_reply(doc: dict[str, Any]) -> list[ReplyEvent]:
    choice = (doc.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    events: list[ReplyEvent] = []
    if message.get("reasoning_content"):
        events.append(Thinking(message["reasoning_content"]))
    if message.get("content"):
        events.append(Text(message["content"]))
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        events.append(ToolCall(str(call.get("id", "")).removeprefix("call_"), fn.get("name", ""), fn.get("arguments") or "{}"))
    events.append(Finish(_FINISH_FROM_OPENAI.get(choice.get("finish_reason") or "stop", "end_turn")))
    return events


def _anthropic_reply(doc: dict[str, Any]) -> list[ReplyEvent]:
    events: list[ReplyEvent] = []
    for block in doc.get("content") or []:
        if block.get("type") == "text":
            events.append(Text(block.get("text", "")))
        elif block.get("type") == "thinking":
            events.append(Thinking(block.get("thinking", "")))
        elif block.get("type") == "tool_use":
            events.append(
                ToolCall(
                    str(block.get("id", "")).removeprefix("toolu_"), block.get("name", ""), json.dumps(block.get("input") or {})
                )
            )
    events.append(Finish(str(doc.get("stop_reason") or "end_turn")))
    return events


async def _anthropic_events(response: aiohttp.ClientResponse) -> AsyncGenerator[list[ReplyEvent], None]:
    decoder = SSEDecoder()
    reader = EventReader(tool_calls=True)
    async for chunk in response.content.iter_any():
        batch = [e for event in decoder.feed(chunk) for e in reader.feed(event)]
        if batch:
            yield batch


async def _openai_events(response: aiohttp.ClientResponse) -> AsyncGenerator[list[ReplyEvent], None]:
    """OpenAI chunks as reply events; tool calls are emitted whole once their arguments are in."""
    decoder = SSEDecoder()
    calls: dict[int, dict[str, str]] = {}
    finish = "end_turn"
    async for chunk in response.content.iter_any():
        batch: list[ReplyEvent] = []
        for event in decoder.feed(chunk):
            if event.data == b"[DONE]":
                continue
            try:
                doc = orjson.loads(event.data)
            except orjson.JSONDecodeError:
                continue
            for choice in doc.get("choices") or []:
                delta = choice.get("delta") or {}
                if delta.get("reasoning_content"):
                    batch.append(Thinking(delta["reasoning_content"]))
                if delta.get("content"):
                    batch.append(Text(delta["content"]))
                for tc in delta.get("tool_calls") or []:
                    slot = calls.setdefault(int(tc.get("index", 0)), {"id": "", "name": "", "arguments": ""})
                    fn = tc.get("function") or {}
                    slot["id"] = tc.get("id") or slot["id"]
                    slot["name"] = fn.get("name") or slot["name"]
                    slot["arguments"] += fn.get("arguments") or ""
                if choice.get("finish_reason"):
                    finish = _FINISH_FROM_OPENAI.get(choice["finish_reason"], "end_turn")
        if batch:
            yield batch
    done: list[ReplyEvent] = [
        ToolCall(c["id"].removeprefix("call_"), c["name"], c["arguments"] or "{}") for _, c in sorted(calls.items())
    ]
    yield [*done, Finish(finish)]
