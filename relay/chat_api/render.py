"""Reply events written as OpenAI `chat.completion.chunk` frames and `chat.completion` objects."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

import orjson

from ..conversation import freeform_input
from ..errors import RelayError
from ..render import Activity, Block, Citation, Renderer
from ..sse import DONE, encode_data

ThinkingFormat = Literal["think_tags", "reasoning_content"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]

_FINISH: dict[str, FinishReason] = {"max_tokens": "length", "tool_use": "tool_calls", "refusal": "content_filter"}


def finish_reason(upstream: str) -> FinishReason:
    """claude.ai stop reasons in OpenAI terms: end_turn and stop sequences are plain stops."""
    return _FINISH.get(upstream, "stop")


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


class ChunkEncoder:
    """Pre-encoded bytes around each delta; one stream, one id."""

    __slots__ = ("_head", "_tail", "created", "id", "model")

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
    annotations: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A non-stream `chat.completion`."""
    message: dict[str, Any] = {"role": "assistant", "content": content or (None if tool_calls else ""), "refusal": None}
    if annotations:
        message["annotations"] = annotations
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


class ChatRenderer(Renderer):
    """An answer as `chat.completion.chunk` frames and as one `chat.completion`.

    Thinking goes to `reasoning_content`, or with think tags into the content: each thinking block
    becomes its own `<think>\n...\n</think>` segment, set off from text before it by a blank line
    and followed by one.
    """

    def __init__(
        self,
        model: str,
        stops: list[str],
        prompt_tokens: int,
        *,
        thinking: ThinkingFormat,
        include_usage: bool,
        keep: bool = True,
        activity: Activity = "compact",
        freeform: frozenset[str] = frozenset(),
    ) -> None:
        super().__init__(model, stops, prompt_tokens, keep=keep, activity=activity)
        self._freeform = freeform  # custom tools: their calls carry raw text, not JSON arguments
        self._offset = 0  # characters of content written, for citation offsets
        self._annotations: list[dict[str, Any]] = []
        self._enc = ChunkEncoder(model)
        self._tags = thinking == "think_tags"
        self._include_usage = include_usage
        self._content: list[str] = []
        self._reasoning: list[str] = []
        self._tool_calls: list[dict[str, Any]] = []
        self._last = ""  # the last content written, to set thinking apart from text before it

    def _say(self, text: str) -> bytes:
        if self.keep:
            self._content.append(text)
        self._last = text
        self._offset += len(text)
        return self._enc.delta(text)

    def position(self) -> int:
        return self._offset

    def on_citation(self, block: Block, citation: Citation) -> bytes:
        """A `url_citation` annotation, on the chunk that closes the cited span."""
        annotation = {
            "type": "url_citation",
            "url_citation": {
                "url": citation.url,
                "title": citation.title,
                "start_index": citation.start,
                "end_index": citation.end,
            },
        }
        self._annotations.append(annotation)
        return self._enc.delta_object({"annotations": [annotation]})

    def on_start(self) -> bytes:
        return self._enc.role()

    def on_block_start(self, block: Block) -> bytes:
        if block.kind != "thinking" or not self._tags:
            return b""
        apart = bool(self._last) and not self._last.endswith("\n\n")
        return self._say(("\n\n" if apart else "") + "<think>\n")

    def on_delta(self, block: Block, text: str) -> bytes:
        if block.kind == "thinking" and not self._tags:
            if self.keep:
                self._reasoning.append(text)
            return self._enc.delta("", text)
        return self._say(text)

    def on_block_stop(self, block: Block) -> bytes:
        return self._say("\n</think>\n\n") if block.kind == "thinking" and self._tags else b""

    def on_tool_call(self, block: Block) -> bytes:
        """A call as OpenAI streams it: id and name first, then the arguments in fragments."""
        call = block.call
        assert call is not None
        index = len(self._tool_calls)
        if call.name in self._freeform:
            custom = {
                "id": "call_" + call.id,
                "type": "custom",
                "custom": {"name": call.name, "input": freeform_input(call.arguments)},
            }
            self._tool_calls.append(custom)
            return self._enc.delta_object({"tool_calls": [{"index": index, **custom}]})
        self._tool_calls.append(
            {"id": "call_" + call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
        )
        head = {"index": index, "id": "call_" + call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
        frames = [self._enc.delta_object({"tool_calls": [head]})]
        half = len(call.arguments) // 2
        for piece in (call.arguments[:half], call.arguments[half:]):
            if piece:
                frames.append(self._enc.delta_object({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}))
        return b"".join(frames)

    def on_finish(self, stop: str) -> bytes:
        frames = [self._enc.finish(finish_reason(stop))]
        if self._include_usage:
            frames.append(self._enc.usage(self.prompt_tokens, self.output_tokens))
        frames.append(DONE)
        return b"".join(frames)

    def error(self, exc: RelayError) -> bytes:
        return error_frame(exc)

    def result(self) -> dict[str, Any]:
        return completion_object(
            self.model,
            "".join(self._content),
            "".join(self._reasoning),
            finish_reason(self.stop or "end_turn"),
            self.prompt_tokens,
            self.output_tokens,
            self._tool_calls or None,
            self._annotations,
        )
