"""Reply events written as Anthropic Messages stream events and `message` objects."""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from ..errors import RelayError
from ..reply import Finish, ReplyEvent, StopCutter, Text, Thinking, ToolCall, estimate_tokens
from ..sse import encode_event

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}


def error_body(exc: RelayError) -> dict[str, Any]:
    """The Anthropic error object for a RelayError."""
    return {"type": "error", "error": {"type": _ERROR_TYPES.get(exc.status, "api_error"), "message": exc.message}}


def _event(name: str, data: dict[str, Any]) -> bytes:
    return encode_event(name, orjson.dumps(data).decode())


def message_id() -> str:
    return f"msg_{uuid.uuid4().hex[:24]}"


def _usage(input_tokens: int, output_tokens: int) -> dict[str, int]:
    return {"input_tokens": input_tokens, "output_tokens": output_tokens, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}


class AnthropicStream:
    """The Anthropic event stream for one answer (a StreamFormat)."""

    __slots__ = ("_model", "_id", "_cutter", "_prompt_tokens", "_index", "_open", "_chars", "_calls")

    def __init__(self, model: str, stops: list[str], prompt_tokens: int) -> None:
        self._model = model
        self._id = message_id()
        self._cutter = StopCutter(stops)
        self._prompt_tokens = prompt_tokens
        self._index = -1
        self._open: str | None = None  # type of the block being streamed
        self._chars = 0
        self._calls = 0

    @property
    def stopped(self) -> bool:
        return self._cutter.stopped

    def opening(self) -> bytes:
        message = {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": _usage(self._prompt_tokens, 1),
        }
        return _event("message_start", {"type": "message_start", "message": message}) + _event("ping", {"type": "ping"})

    def _block(self, kind: str, start: dict[str, Any]) -> bytes:
        """Close the current block if it is of another kind, then open one of `kind`."""
        if self._open == kind:
            return b""
        out = self._close()
        self._index += 1
        self._open = kind
        return out + _event("content_block_start", {"type": "content_block_start", "index": self._index, "content_block": start})

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        return _event("content_block_stop", {"type": "content_block_stop", "index": self._index})

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return _event("content_block_delta", {"type": "content_block_delta", "index": self._index, "delta": delta})

    def feed(self, event: ReplyEvent) -> bytes:
        if isinstance(event, Text):
            text = self._cutter.feed(event.text)
            if not text:
                return b""
            self._chars += len(text)
            return self._block("text", {"type": "text", "text": ""}) + self._delta({"type": "text_delta", "text": text})
        if isinstance(event, Thinking):
            self._chars += len(event.text)
            start = {"type": "thinking", "thinking": "", "signature": ""}
            return self._block("thinking", start) + self._delta({"type": "thinking_delta", "thinking": event.text})
        if isinstance(event, ToolCall):
            return self._tool_use(event)
        return b""

    def _tool_use(self, call: ToolCall) -> bytes:
        self._calls += 1
        self._chars += len(call.arguments)
        out = self._close() + self._block("tool_use", {"type": "tool_use", "id": "toolu_" + call.id, "name": call.name, "input": {}})
        half = len(call.arguments) // 2
        for piece in (call.arguments[:half], call.arguments[half:]):
            if piece:
                out += self._delta({"type": "input_json_delta", "partial_json": piece})
        return out + self._close()

    def closing(self, reason: str) -> bytes:
        out = b""
        if tail := self._cutter.flush():
            self._chars += len(tail)
            out += self._block("text", {"type": "text", "text": ""}) + self._delta({"type": "text_delta", "text": tail})
        out += self._close()
        stop = stop_reason(reason, self._calls, self._cutter)
        delta = {"stop_reason": stop, "stop_sequence": self._cutter.matched}
        usage = {"output_tokens": estimate_tokens(self._chars)}
        out += _event("message_delta", {"type": "message_delta", "delta": delta, "usage": usage})
        return out + _event("message_stop", {"type": "message_stop"})

    def error(self, exc: RelayError) -> bytes:
        return _event("error", error_body(exc))

    @property
    def output_tokens(self) -> int:
        return estimate_tokens(self._chars)


def stop_reason(upstream: str, calls: int, cutter: StopCutter) -> str:
    if calls:
        return "tool_use"
    if cutter.stopped:
        return "stop_sequence"
    return upstream if upstream in ("end_turn", "max_tokens", "stop_sequence", "refusal", "pause_turn") else "end_turn"


def collect_message(events: list[ReplyEvent], model: str, stops: list[str], prompt_tokens: int) -> dict[str, Any]:
    """A whole answer as one Anthropic `message`."""
    cutter = StopCutter(stops)
    content: list[dict[str, Any]] = []
    reason = "end_turn"
    calls = 0

    def add_text(kind: str, field: str, text: str) -> None:
        if content and content[-1]["type"] == kind:
            content[-1][field] += text
        else:
            content.append({"type": kind, field: text, **({"signature": ""} if kind == "thinking" else {})})

    for event in events:
        if isinstance(event, Finish):
            reason = event.reason
        elif isinstance(event, Thinking):
            add_text("thinking", "thinking", event.text)
        elif isinstance(event, Text) and not cutter.stopped:
            if text := cutter.feed(event.text):
                add_text("text", "text", text)
        elif isinstance(event, ToolCall):
            calls += 1
            content.append({"type": "tool_use", "id": "toolu_" + event.id, "name": event.name, "input": orjson.loads(event.arguments)})
    if tail := cutter.flush():
        add_text("text", "text", tail)
    chars = sum(len(b.get("text", "")) + len(b.get("thinking", "")) for b in content)
    return {
        "id": message_id(),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(reason, calls, cutter),
        "stop_sequence": cutter.matched,
        "usage": _usage(prompt_tokens, estimate_tokens(chars)),
    }
