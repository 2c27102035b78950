"""Writing one fake completion as claude.ai streams it: message_start, optional web search and
thinking blocks, the text (with a citation when it searched), an optional tool block, then
message_delta, message_limit and message_stop. Scripted faults cut, stall or spoil it."""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .behavior import Behavior

# Frames per write when streaming without delay.
FAST_BATCH = 32
# With one write per event, a `ping` event after this many text events, as claude.ai interleaves them.
PING_EVERY = 50
# How often a silent answer ("hang", "stall") checks whether its caller has gone.
SILENCE_POLL = 0.05


@dataclass(slots=True)
class AnswerPlan:
    """What one completion streams."""

    behavior: Behavior
    model: str
    text: str
    thinking: bool
    search: str | None  # the query of the web search it runs, if the chat has search on
    chunks: int | None  # generated answers of this many pieces (benchmarks)
    delay: float  # between text frames
    windows: dict[str, Any]  # the message_limit windows after this answer
    message_uuid: str = ""
    # One write per event, pings included, as claude.ai flushes them (benchmarks); else batches.
    per_event: bool = False


async def write_answer(resp: web.StreamResponse, plan: AnswerPlan) -> None:
    """The whole answer, or as much of it as the scripted behaviour lets through."""
    behavior = plan.behavior
    msg: dict[str, Any] = {
        "id": "chatcompl_" + uuid.uuid4().hex[:12],
        "type": "message",
        "role": "assistant",
        "model": plan.model,
        "content": [],
        "stop_reason": None,
        "uuid": plan.message_uuid or str(uuid.uuid4()),
    }
    await resp.write(sse("message_start", {"type": "message_start", "message": msg}))
    if behavior.first_delay:
        await asyncio.sleep(behavior.first_delay)
    if behavior.mode == "overloaded":
        await resp.write(sse("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}))
        return
    if behavior.mode == "garbage":
        await resp.write(b"\x00\xff junk\ndata: {not json\n\nevent: what\ndata: [1, 2]\n\n: more\n")
        return
    if behavior.mode == "drift":
        await _drift(resp)
    index, text = await _before_text(resp, plan)
    if not await _text(resp, plan, index, text):
        return
    if behavior.tool_block:
        await tool_block(resp, index + 1, *behavior.tool_block)
    if behavior.hold_end is not None:
        await behavior.hold_end.wait()
    delta = {"stop_reason": behavior.stop_reason, "stop_sequence": None}
    await resp.write(sse("message_delta", {"type": "message_delta", "delta": delta}))
    limit: dict[str, Any] = {"type": "within_limit", "resetsAt": None, "remaining": None, "windows": plan.windows}
    if behavior.mode == "limit_after":
        limit = {"type": "exceeded_limit", "resetsAt": math.ceil(behavior.resets_at or time.time() + 3600), "remaining": 0}
    await resp.write(sse("message_limit", {"type": "message_limit", "message_limit": limit}))
    await resp.write(sse("message_stop", {"type": "message_stop"}))


async def _drift(resp: web.StreamResponse) -> None:
    """Shapes a later claude.ai might send: a new event, a new block type with a new delta."""
    note = {"type": "message_annotation", "note": "sessionKey=sk-ant-sid01-LeakedFromUpstream_0123456789"}
    await resp.write(sse("message_annotation", note))
    await resp.write(sse("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "canvas"}}))
    delta = {"type": "canvas_delta", "ops": [{"op": "draw"}]}
    await resp.write(sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}))
    await resp.write(sse("content_block_stop", {"type": "content_block_stop", "index": 0}))


async def _before_text(resp: web.StreamResponse, plan: AnswerPlan) -> tuple[int, str]:
    """Search and thinking blocks; (the text block's index, the text still to stream)."""
    index, text = 0, plan.text
    if plan.search:
        index = await search_blocks(resp, index, plan.search)
    if plan.thinking:
        behavior = plan.behavior
        thought = behavior.thinking or "Let me think about this step by step."
        index = await thinking_block(resp, index, thought, behavior.thinking_form)
        if behavior.interleave:
            first, _, text = text.partition(" ")
            await text_block(resp, index, first + " ")
            index = await thinking_block(resp, index + 1, "And once more.", behavior.thinking_form)
    return index, text


async def _text(resp: web.StreamResponse, plan: AnswerPlan, index: int, text: str) -> bool:
    """The text block; False when the scripted behaviour cut or stalled it."""
    behavior = plan.behavior
    block = {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}
    await resp.write(sse("content_block_start", block))
    frames = [text_delta(index, piece) for piece in pieces(text, plan.chunks)]
    if plan.search and frames:
        frames[0:1] = _cited(index, frames[0])
    paced = bool(plan.delay) or behavior.mode in ("drop", "stall")
    if not paced and plan.per_event:
        ping = sse("ping", {"type": "ping"})
        for n, frame in enumerate(frames, 1):
            await resp.write(frame)
            if n % PING_EVERY == 0:
                await resp.write(ping)
    elif not paced:
        # As fast as a socket takes it: batches of frames, so the fake is never the bottleneck.
        for i in range(0, len(frames), FAST_BATCH):
            await resp.write(b"".join(frames[i : i + FAST_BATCH]))
    for n, frame in enumerate(frames if paced else []):
        if n == behavior.drop_after and behavior.mode in ("drop", "stall"):
            await _cut(resp, behavior.mode)
            return False
        await resp.write(frame)
        if plan.delay:
            await asyncio.sleep(plan.delay)
    await resp.write(sse("content_block_stop", {"type": "content_block_stop", "index": index}))
    return True


def _cited(index: int, frame: bytes) -> list[bytes]:
    """The first words cite the first search result, as claude.ai marks cited spans."""
    cite = {
        "uuid": str(uuid.uuid4()),
        "title": "Result 0",
        "url": "https://example.org/0",
        "sources": [],
        "metadata": {"type": "webpage_metadata", "site_domain": "example.org", "site_name": "Example"},
        "origin_tool_name": "web_search",
    }
    opening = {"type": "citation_start_delta", "citation": cite}
    closing = {"type": "citation_end_delta", "citation_uuid": cite["uuid"]}
    return [
        sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": opening}),
        frame,
        sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": closing}),
    ]


async def _cut(resp: web.StreamResponse, mode: str) -> None:
    """`stall`: go silent for good; `drop`: cut the connection like a network failure."""
    request = resp._req
    assert request is not None
    if mode == "stall":
        await silence(request)
        return
    await resp.write(b": cut\n\n")
    assert request.transport is not None
    request.transport.abort()  # no terminating chunk
    await asyncio.sleep(0)


async def thinking_block(resp: web.StreamResponse, index: int, thought: str, form: str) -> int:
    """A thinking block: full thinking deltas, summary deltas only, or both; returns the next index."""
    start = {"type": "thinking", "thinking": "", "summaries": []}
    await resp.write(sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": start}))
    deltas: list[dict[str, Any]] = []
    if form in ("full", "both"):
        deltas += [{"type": "thinking_delta", "thinking": piece} for piece in pieces(thought, None)]
    if form in ("summary", "both"):
        deltas.append({"type": "thinking_summary_delta", "summary": {"summary": thought}})
    for delta in deltas:
        await resp.write(sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}))
    await resp.write(sse("content_block_stop", {"type": "content_block_stop", "index": index}))
    return index + 1


async def text_block(resp: web.StreamResponse, index: int, text: str) -> None:
    start = {"type": "text", "text": "", "citations": []}
    await resp.write(sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": start}))
    await resp.write(text_delta(index, text))
    await resp.write(sse("content_block_stop", {"type": "content_block_stop", "index": index}))


async def search_blocks(resp: web.StreamResponse, index: int, query: str) -> int:
    """claude.ai's own web search: a tool_use block, then its (large) tool_result block."""
    start: dict[str, Any] = {
        "type": "tool_use",
        "id": "toolu_" + uuid.uuid4().hex[:8],
        "name": "web_search",
        "input": {},
        "message": "Searching the web",
        "integration_name": None,
        "icon_name": "globe",
    }
    await _tool_use(resp, index, start, json.dumps({"query": query}), 7)
    results = [
        {
            "type": "knowledge",
            "title": f"Result {n}",
            "url": f"https://example.org/{n}",
            "text": "x" * 300,
            "metadata": {"type": "webpage_metadata", "site_domain": "example.org", "site_name": "Example"},
        }
        for n in range(3)
    ]
    block = {"type": "tool_result", "tool_use_id": start["id"], "name": "web_search", "content": results, "is_error": False}
    await resp.write(sse("content_block_start", {"type": "content_block_start", "index": index + 1, "content_block": block}))
    await resp.write(sse("content_block_stop", {"type": "content_block_stop", "index": index + 1}))
    return index + 2


async def tool_block(resp: web.StreamResponse, index: int, name: str, args: dict[str, Any]) -> None:
    """A tool_use block whose input arrives as JSON fragments, as claude.ai streams artifacts."""
    start = {"type": "tool_use", "id": "toolu_" + uuid.uuid4().hex[:8], "name": name, "input": {}}
    raw = json.dumps(args)
    await _tool_use(resp, index, start, raw, max(1, len(raw) // 3))


async def _tool_use(resp: web.StreamResponse, index: int, start: dict[str, Any], raw: str, step: int) -> None:
    await resp.write(sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": start}))
    for i in range(0, len(raw), step):
        delta = {"type": "input_json_delta", "partial_json": raw[i : i + step]}
        await resp.write(sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}))
    await resp.write(sse("content_block_stop", {"type": "content_block_stop", "index": index}))


async def silence(request: web.BaseRequest) -> None:
    """Say nothing for as long as the caller waits (it gives up by closing the connection)."""
    while request.transport is not None and not request.transport.is_closing():
        await asyncio.sleep(SILENCE_POLL)


def text_delta(index: int, piece: str) -> bytes:
    delta = {"type": "text_delta", "text": piece}
    return sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def pieces(text: str, count: int | None) -> list[str]:
    """Split text into streaming pieces: word by word, or `count` pieces of generated length."""
    if count:
        return [f"token{i} " for i in range(count)]
    words = text.split(" ")
    return [w + " " for w in words[:-1]] + [words[-1]] if words else [text]
