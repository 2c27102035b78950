"""Every client API renders the same answer streamed or whole: the same events through both modes
must give the same content, tool calls, finish reason and usage."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from relay.apis import CLIENT_APIS
from relay.chat_api.render import ChatRenderer
from relay.messages_api.render import MessageRenderer
from relay.render import Renderer
from relay.reply import Finish, ReplyEvent, Text, Thinking, ToolCall
from relay.responses_api.render import ResponseRenderer

CALL = ToolCall("abc123", "get_weather", '{"city":"Paris"}')
SEQUENCES: dict[str, tuple[list[ReplyEvent], list[str]]] = {
    "text": ([Text("Hello "), Text("world"), Finish("end_turn")], []),
    "thinking": ([Thinking("Hmm, "), Thinking("let me see."), Text("Four."), Finish("end_turn")], []),
    "interleaved": ([Thinking("a"), Text("b"), Thinking("c"), Text("d"), Finish("end_turn")], []),
    "tool_calls": ([Text("Checking."), CALL, ToolCall("def456", "get_time", "{}"), Finish("tool_use")], []),
    "stop_sequence": ([Text("alpha be"), Text("ta STOP gamma"), Finish("end_turn")], ["STOP"]),
    "held_back_stop_prefix": ([Text("alpha ST"), Finish("end_turn")], ["STOP"]),
    "max_tokens": ([Text("cut sh"), Finish("max_tokens")], []),
    "refusal": ([Text("No."), Finish("refusal")], []),
    "unknown_stop": ([Text("x"), Finish("something_new")], []),
}

Make = Callable[[list[str]], Renderer]
# Renderers by the registry folder of their client API: every registered API is covered.
RENDERERS: dict[str, Make] = {
    "openai-think-tags": lambda stops: ChatRenderer("m", stops, 7, thinking="think_tags", include_usage=True),
    "openai-reasoning": lambda stops: ChatRenderer("m", stops, 7, thinking="reasoning_content", include_usage=True),
    "anthropic": lambda stops: MessageRenderer("m", stops, 7),
    "responses": lambda stops: ResponseRenderer("m", 7, echo={}, names={}),
}
API_OF = {
    "openai-think-tags": "chat_api",
    "openai-reasoning": "chat_api",
    "anthropic": "messages_api",
    "responses": "responses_api",
}


def test_every_registered_client_api_is_rendered_here() -> None:
    assert {spec.package for spec in CLIENT_APIS} <= set(API_OF.values())


async def _batches(events: list[ReplyEvent]) -> AsyncIterator[list[ReplyEvent]]:
    for event in events:
        yield [event]


def _streamed(renderer: Renderer, events: list[ReplyEvent]) -> bytes:
    async def run() -> bytes:
        return b"".join([data async for data, _ in renderer.frames(_batches(events))])

    return asyncio.run(run())


def _whole(renderer: Renderer, events: list[ReplyEvent]) -> dict[str, Any]:
    return asyncio.run(renderer.complete(_batches(events)))


def _frames(raw: bytes) -> list[tuple[str, Any]]:
    """(event name, data) per SSE frame, as a client decodes them."""
    frames = []
    for block in raw.decode().split("\n\n"):
        name, data = "message", None
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
        if data is not None:
            frames.append((name, data if data == "[DONE]" else json.loads(data)))
    return frames


def _openai_from_stream(raw: bytes) -> dict[str, Any]:
    content, reasoning, calls, finish, usage = "", "", {}, None, None
    frames = _frames(raw)
    assert frames[-1][1] == "[DONE]" and [f for f in frames if f[1] == "[DONE]"] == [frames[-1]]
    for _, chunk in frames[:-1]:
        if chunk.get("usage"):
            usage = chunk["usage"]
        for choice in chunk["choices"]:
            delta = choice["delta"]
            content += delta.get("content") or ""
            reasoning += delta.get("reasoning_content") or ""
            for tc in delta.get("tool_calls") or []:
                slot = calls.setdefault(tc["index"], {"id": "", "name": "", "arguments": ""})
                slot["id"] = tc.get("id") or slot["id"]
                slot["name"] = tc.get("function", {}).get("name") or slot["name"]
                slot["arguments"] += tc.get("function", {}).get("arguments") or ""
            finish = choice["finish_reason"] or finish
    return {
        "content": content,
        "reasoning": reasoning,
        "calls": [calls[i] for i in sorted(calls)],
        "finish": finish,
        "usage": usage,
    }


def _openai_from_object(obj: dict[str, Any]) -> dict[str, Any]:
    message = obj["choices"][0]["message"]
    return {
        "content": message["content"] or "",
        "reasoning": message.get("reasoning_content", ""),
        "calls": [{"id": c["id"], **c["function"]} for c in message.get("tool_calls") or []],
        "finish": obj["choices"][0]["finish_reason"],
        "usage": obj["usage"],
    }


def _anthropic_from_stream(raw: bytes) -> dict[str, Any]:
    blocks: list[dict[str, Any]] = []
    stop = sequence = usage = None
    for name, data in _frames(raw):
        assert name == data["type"]
        if name == "message_start":
            usage = dict(data["message"]["usage"])
        elif name == "content_block_start":
            assert data["index"] == len(blocks)
            blocks.append({**data["content_block"], "_json": ""})
        elif name == "content_block_delta":
            block, delta = blocks[data["index"]], data["delta"]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            elif delta["type"] == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif delta["type"] == "input_json_delta":
                block["_json"] += delta["partial_json"]
        elif name == "message_delta":
            stop, sequence = data["delta"]["stop_reason"], data["delta"]["stop_sequence"]
            usage = {**(usage or {}), **data["usage"]}
    for block in blocks:
        raw_json = block.pop("_json")
        if block["type"] == "tool_use":
            block["input"] = json.loads(raw_json)
    return {"content": blocks, "stop": stop, "sequence": sequence, "usage": usage}


def _anthropic_from_object(obj: dict[str, Any]) -> dict[str, Any]:
    return {"content": obj["content"], "stop": obj["stop_reason"], "sequence": obj["stop_sequence"], "usage": obj["usage"]}


def _without_ids(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in item.items() if k != "id"} for item in items]


def _responses_from_stream(raw: bytes) -> dict[str, Any]:
    """The items as the output_item.done events give them, their text as the deltas built it."""
    frames = _frames(raw)
    assert [d["sequence_number"] for _, d in frames] == list(range(len(frames)))
    items = [d["item"] for name, d in frames if name == "response.output_item.done"]
    texts: dict[str, str] = {}
    for name, d in frames:
        if name in ("response.output_text.delta", "response.reasoning_summary_text.delta"):
            texts[d["item_id"]] = texts.get(d["item_id"], "") + d["delta"]
    for item in items:
        if item["type"] == "message":
            assert item["content"][0]["text"] == texts[item["id"]]
    final = frames[-1][1]["response"]
    return {"output": _without_ids(items), "status": final["status"], "usage": final["usage"]}


def _responses_from_object(obj: dict[str, Any]) -> dict[str, Any]:
    return {"output": _without_ids(obj["output"]), "status": obj["status"], "usage": obj["usage"]}


FROM_STREAM = {"chat_api": _openai_from_stream, "messages_api": _anthropic_from_stream, "responses_api": _responses_from_stream}
FROM_OBJECT = {"chat_api": _openai_from_object, "messages_api": _anthropic_from_object, "responses_api": _responses_from_object}


@pytest.mark.parametrize("api", RENDERERS)
@pytest.mark.parametrize("case", SEQUENCES)
def test_stream_and_whole_answer_agree(api: str, case: str) -> None:
    events, stops = SEQUENCES[case]
    make = RENDERERS[api]
    raw = _streamed(make(stops), events)
    whole = _whole(make(stops), events)
    assert FROM_STREAM[API_OF[api]](raw) == FROM_OBJECT[API_OF[api]](whole)


def test_what_each_api_shows_for_one_answer() -> None:
    events, stops = SEQUENCES["interleaved"]
    tags = _openai_from_object(_whole(RENDERERS["openai-think-tags"](stops), events))
    assert tags["content"] == "<think>\na\n</think>\n\nb\n\n<think>\nc\n</think>\n\nd"
    reasoning = _openai_from_object(_whole(RENDERERS["openai-reasoning"](stops), events))
    assert (reasoning["content"], reasoning["reasoning"]) == ("bd", "ac")
    message = _whole(RENDERERS["anthropic"](stops), events)
    assert [b["type"] for b in message["content"]] == ["thinking", "text", "thinking", "text"]


@pytest.mark.parametrize("api", RENDERERS)
def test_tool_calls_count_the_same_tokens_in_both_modes(api: str) -> None:
    events, _ = SEQUENCES["tool_calls"]
    streamed, whole = RENDERERS[api]([]), RENDERERS[api]([])
    _streamed(streamed, events)
    _whole(whole, events)
    expected = (len("Checking.") + len(CALL.arguments) + len("{}") + 3) // 4
    assert streamed.output_tokens == whole.output_tokens == expected
