"""Reply events written as OpenAI `chat.completion.chunk` frames and `chat.completion` objects."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

import orjson

from ..errors import RelayError
from ..reply import Finish, ReplyEvent, StopCutter, Text, Thinking, ToolCall, estimate_tokens
from ..sse import DONE, encode_data

ThinkingFormat = Literal["think_tags", "reasoning_content"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]

_FINISH: dict[str, FinishReason] = {"max_tokens": "length", "tool_use": "tool_calls", "refusal": "content_filter"}


def finish_reason(upstream: str) -> FinishReason:
    """claude.ai stop reasons in OpenAI terms: end_turn and stop sequences are plain stops."""
    return _FINISH.get(upstream, "stop")


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


class ThinkTags:
    """Shows thinking as `<think>...</think>` in the content, or as `reasoning_content`."""

    __slots__ = ("mode", "_open")

    def __init__(self, mode: ThinkingFormat) -> None:
        self.mode = mode
        self._open = False

    def split(self, event_text: str, is_thinking: bool) -> tuple[str, str]:
        """(content, reasoning_content) for one piece of text."""
        if self.mode == "reasoning_content":
            return ("", event_text) if is_thinking else (event_text, "")
        if is_thinking:
            if not self._open:
                self._open = True
                return "<think>\n" + event_text, ""
            return event_text, ""
        return self.close() + event_text, ""

    @property
    def is_open(self) -> bool:
        return self._open

    def close(self) -> str:
        """The closing tag, if thinking was left open."""
        if self._open:
            self._open = False
            return "\n</think>\n\n"
        return ""


class ChunkEncoder:
    """Pre-encoded bytes around each delta; one stream, one id."""

    __slots__ = ("id", "model", "created", "_head", "_tail")

    def __init__(self, model: str) -> None:
        self.id = completion_id()
        self.model = model
        self.created = int(time.time())
        self._head = b'data: {"id":"%s","object":"chat.completion.chunk","created":%d,"model":%s,"system_fingerprint":null,' % (
            self.id.encode(),
            self.created,
            orjson.dumps(model),
        )
        self._tail = b',"logprobs":null,"finish_reason":null}]}\n\n'

    def _frame(self, delta: bytes, tail: bytes | None = None) -> bytes:
        return self._head + b'"choices":[{"index":0,"delta":' + delta + (self._tail if tail is None else tail)

    def role(self) -> bytes:
        return self._frame(b'{"role":"assistant","content":""}')

    def delta(self, content: str, reasoning: str = "") -> bytes:
        if reasoning:
            return self._frame(b'{"reasoning_content":' + orjson.dumps(reasoning) + b"}")
        return self._frame(b'{"content":' + orjson.dumps(content) + b"}")

    def delta_object(self, delta: dict[str, Any]) -> bytes:
        return self._frame(orjson.dumps(delta))

    def finish(self, reason: FinishReason) -> bytes:
        return self._frame(b"{}", b',"logprobs":null,"finish_reason":"%s"}]}\n\n' % reason.encode())

    def usage(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        return self._head + b'"choices":[],"usage":' + orjson.dumps(_usage(prompt_tokens, completion_tokens)) + b"}\n\n"


def error_frame(exc: RelayError) -> bytes:
    """The in-band error for a stream that already started; the OpenAI SDK raises APIError on it."""
    return encode_data(json.dumps(exc.body(), separators=(",", ":")))


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion_object(
    model: str,
    content: str,
    reasoning: str,
    reason: FinishReason,
    prompt_tokens: int,
    completion_tokens: int,
    tool_calls: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A non-stream `chat.completion`."""
    message: dict[str, Any] = {"role": "assistant", "content": content or (None if tool_calls else ""), "refusal": None}
    if reasoning:
        message["reasoning_content"] = reasoning
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": reason}],
        "usage": _usage(prompt_tokens, completion_tokens),
    }



class OpenAIStream:
    """The OpenAI chunk stream for one answer (a StreamFormat)."""

    __slots__ = ("_enc", "_tags", "_cutter", "_usage", "_prompt_tokens", "_chars", "_plain", "_calls")

    def __init__(self, model: str, mode: ThinkingFormat, stops: list[str], include_usage: bool, prompt_tokens: int) -> None:
        self._enc = ChunkEncoder(model)
        self._tags = ThinkTags(mode)
        self._cutter = StopCutter(stops)
        self._usage = include_usage
        self._prompt_tokens = prompt_tokens
        self._chars = 0
        # No stop sequences and no thinking tag to close: text goes straight through.
        self._plain = not stops
        self._calls = 0

    @property
    def stopped(self) -> bool:
        return self._cutter.stopped

    def opening(self) -> bytes:
        return self._enc.role()

    def feed(self, event: ReplyEvent) -> bytes:
        if type(event) is Text and self._plain and not self._tags.is_open:
            self._chars += len(event.text)
            return self._enc.delta(event.text)
        if isinstance(event, ToolCall):
            return self._tool_call(event)
        if isinstance(event, Thinking):
            content, reasoning = self._tags.split(event.text, True)
        elif isinstance(event, Text):
            text = self._cutter.feed(event.text)
            if not text:
                return b""
            content, reasoning = self._tags.split(text, False)
        else:
            return b""
        self._chars += len(content) + len(reasoning)
        return self._enc.delta(content, reasoning) if content or reasoning else b""

    def _tool_call(self, call: ToolCall) -> bytes:
        """A call as OpenAI streams it: id and name first, then the arguments in fragments."""
        index, self._calls = self._calls, self._calls + 1
        head = {"index": index, "id": "call_" + call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
        closing_tag = self._tags.close()
        frames = [self._enc.delta(closing_tag)] if closing_tag else []
        frames.append(self._enc.delta_object({"tool_calls": [head]}))
        half = len(call.arguments) // 2
        for piece in (call.arguments[:half], call.arguments[half:]):
            if piece:
                frames.append(self._enc.delta_object({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}))
        return b"".join(frames)

    def closing(self, reason: str) -> bytes:
        tail = self._cutter.flush() + self._tags.close()
        frames = [self._enc.delta(tail)] if tail else []
        frames.append(self._enc.finish("tool_calls" if self._calls else finish_reason(reason)))
        if self._usage:
            frames.append(self._enc.usage(self._prompt_tokens, estimate_tokens(self._chars + len(tail))))
        frames.append(DONE)
        return b"".join(frames)

    def error(self, exc: RelayError) -> bytes:
        return error_frame(exc)

    @property
    def output_tokens(self) -> int:
        return estimate_tokens(self._chars)


def collect_completion(
    events: list[ReplyEvent], model: str, mode: ThinkingFormat, stops: list[str], prompt_tokens: int
) -> dict[str, Any]:
    """A whole answer as one `chat.completion`."""
    tags = ThinkTags(mode)
    cutter = StopCutter(stops)
    content: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    reason = "end_turn"
    for event in events:
        if isinstance(event, Finish):
            reason = event.reason
        elif isinstance(event, ToolCall):
            calls.append({"id": "call_" + event.id, "type": "function", "function": {"name": event.name, "arguments": event.arguments}})
        elif isinstance(event, (Text, Thinking)) and not cutter.stopped:
            thinking = isinstance(event, Thinking)
            c, r = tags.split(event.text if thinking else cutter.feed(event.text), thinking)
            content.append(c)
            reasoning.append(r)
    content.append(cutter.flush() + tags.close())
    text, thought = "".join(content), "".join(reasoning)
    if calls:
        text = text.strip()
    final = "tool_calls" if calls else "stop" if cutter.stopped else finish_reason(reason)
    out_tokens = estimate_tokens(len(text) + len(thought) + sum(len(c["function"]["arguments"]) for c in calls))
    return completion_object(model, text, thought, final, prompt_tokens, out_tokens, calls or None)
