"""Fallback providers: an OpenAI-compatible API or the Anthropic API answers when the pool cannot.

Same API on both sides: the provider's answer is passed through as it is. Across APIs the request
is rebuilt from relay's normalised conversation and the answer read into reply events, which the
client's own format then writes.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
import orjson
from loguru import logger

from .config import Fallback
from .metrics import Metrics
from .chat_api.models import FilePart, ImagePart, Message, TextPart
from .reply import Finish, ReplyEvent, Text, Thinking, ToolCall
from .sse import SSEDecoder
from .claude.tools import ToolPlan
from .claude.webapi import EventReader

Api = Literal["openai", "anthropic"]
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
    """A request as both APIs can be rebuilt from it."""

    api: Api
    body: dict[str, Any]  # the client's own request body
    model: str
    messages: list[Message]
    tools: ToolPlan | None
    stream: bool
    stops: list[str] = field(default_factory=list)
    max_tokens: int | None = None
    thinking: bool = False


@dataclass(slots=True)
class Answer:
    """What a provider answered: raw bytes or JSON to pass through, or events to write in the client's format."""

    provider: str
    raw: AsyncIterator[bytes] | None = None
    body: dict[str, Any] | None = None
    events: AsyncGenerator[list[ReplyEvent], None] | None = None


class Fallbacks:
    """Tries the configured providers in order."""

    def __init__(self, providers: tuple[Fallback, ...], metrics: Metrics) -> None:
        self.providers = providers
        self.metrics = metrics
        self._http: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    @asynccontextmanager
    async def open(self, ask: Ask) -> AsyncIterator[Answer]:
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
            try:
                if response.status >= 300:
                    detail = (await response.text())[:200]
                    self._failed(provider, f"answered {response.status}: {detail}")
                    continue
                self.metrics.fallbacks.labels(provider.name, "answered").inc()
                logger.info("fallback {} answers", provider.name)
                yield await _answer(provider, ask, response)
                return
            finally:
                response.release()
        raise NoFallback

    def _failed(self, provider: Fallback, why: str) -> None:
        self.metrics.fallbacks.labels(provider.name, "failed").inc()
        logger.warning("fallback {} failed: {}", provider.name, why)


def _request(provider: Fallback, ask: Ask) -> tuple[str, dict[str, str], dict[str, Any]]:
    key = provider.key.get_secret_value()
    if provider.type == "openai":
        body = dict(ask.body) if ask.api == "openai" else _openai_body(ask)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        url = provider.url + "/chat/completions"
    else:
        body = dict(ask.body) if ask.api == "anthropic" else _anthropic_body(ask)
        headers = {"x-api-key": key, "anthropic-version": ANTHROPIC_VERSION}
        url = provider.url + "/v1/messages"
    body["model"] = provider.model or ask.model
    return url, headers, body


async def _answer(provider: Fallback, ask: Ask, response: aiohttp.ClientResponse) -> Answer:
    if provider.type == ask.api:
        if ask.stream:
            return Answer(provider.name, raw=response.content.iter_any())
        return Answer(provider.name, body=await response.json(content_type=None))
    if ask.stream:
        reader = _openai_events if provider.type == "openai" else _anthropic_events
        return Answer(provider.name, events=reader(response))
    doc = await response.json(content_type=None)
    events = _openai_message(doc) if provider.type == "openai" else _anthropic_message(doc)
    return Answer(provider.name, events=_once(events))


async def _once(events: list[ReplyEvent]) -> AsyncGenerator[list[ReplyEvent], None]:
    yield events


# -- requests ---------------------------------------------------------------------------------------


def _openai_body(ask: Ask) -> dict[str, Any]:
    """An Anthropic request as an OpenAI chat completion request."""
    body: dict[str, Any] = {
        "messages": [m.model_dump(exclude_none=True) for m in ask.messages],
        "stream": ask.stream,
        "max_tokens": ask.max_tokens,
    }
    if ask.stops:
        body["stop"] = ask.stops
    if ask.tools and ask.tools.tools:
        body["tools"] = [
            {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}
            for t in ask.tools.tools
        ]
        forced = {"type": "function", "function": {"name": ask.tools.forced}} if ask.tools.forced else None
        body["tool_choice"] = forced or ask.tools.choice
    return {k: v for k, v in body.items() if v is not None}


def _anthropic_part(part: TextPart | ImagePart | FilePart) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    url = part.image_url.url if isinstance(part, ImagePart) else part.file.file_data or ""
    if url.startswith("data:"):
        media, _, data = url[5:].partition(";base64,")
        source = {"type": "base64", "media_type": media, "data": data}
    else:
        source = {"type": "url", "url": url}
    return {"type": "image" if isinstance(part, ImagePart) else "document", "source": source}


def _anthropic_body(ask: Ask) -> dict[str, Any]:
    """An OpenAI request as an Anthropic Messages request."""
    system: list[str] = []
    messages: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": blocks})

    for m in ask.messages:
        content = [TextPart(type="text", text=m.content)] if isinstance(m.content, str) else m.content or []
        parts = [p for p in content if isinstance(p, (TextPart, ImagePart, FilePart))]
        if m.role in ("system", "developer"):
            system.extend(p.text for p in parts if isinstance(p, TextPart))
        elif m.role in ("tool", "function"):
            text = "\n".join(p.text for p in parts if isinstance(p, TextPart))
            add("user", [{"type": "tool_result", "tool_use_id": m.tool_call_id or "", "content": text}])
        else:
            blocks = [_anthropic_part(p) for p in parts if not isinstance(p, TextPart) or p.text]
            for call in m.tool_calls or []:
                blocks.append({"type": "tool_use", "id": call.id, "name": call.function.name, "input": json.loads(call.function.arguments or "{}")})
            if blocks:
                add(m.role, blocks)
    body: dict[str, Any] = {"messages": messages, "max_tokens": ask.max_tokens or DEFAULT_MAX_TOKENS, "stream": ask.stream}
    if system:
        body["system"] = "\n\n".join(system)
    if ask.stops:
        body["stop_sequences"] = ask.stops
    if ask.thinking:
        body["thinking"] = {"type": "enabled", "budget_tokens": max(1024, body["max_tokens"] // 2)}
    if ask.tools and ask.tools.tools:
        body["tools"] = [{"name": t.name, "description": t.description, "input_schema": t.parameters or {"type": "object"}} for t in ask.tools.tools]
        if ask.tools.forced:
            body["tool_choice"] = {"type": "tool", "name": ask.tools.forced}
        else:
            body["tool_choice"] = {"type": {"auto": "auto", "required": "any", "none": "none"}[ask.tools.choice]}
    return body


# -- answers ----------------------------------------------------------------------------------------


def _openai_message(doc: dict[str, Any]) -> list[ReplyEvent]:
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


def _anthropic_message(doc: dict[str, Any]) -> list[ReplyEvent]:
    events: list[ReplyEvent] = []
    for block in doc.get("content") or []:
        if block.get("type") == "text":
            events.append(Text(block.get("text", "")))
        elif block.get("type") == "thinking":
            events.append(Thinking(block.get("thinking", "")))
        elif block.get("type") == "tool_use":
            events.append(ToolCall(str(block.get("id", "")).removeprefix("toolu_"), block.get("name", ""), json.dumps(block.get("input") or {})))
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
    done: list[ReplyEvent] = [ToolCall(c["id"].removeprefix("call_"), c["name"], c["arguments"] or "{}") for _, c in sorted(calls.items())]
    yield [*done, Finish(finish)]
