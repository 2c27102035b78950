"""Reply events written as Anthropic Messages stream events and `message` objects."""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from ..conversation import parse_arguments
from ..errors import RelayError
from ..render import Activity, Block, Citation, Renderer
from ..reply import ToolActivity, ToolOutcome
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
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


class MessageRenderer(Renderer):
    """An answer as Anthropic stream events and as one `message` object."""

    def __init__(
        self,
        model: str,
        stops: list[str],
        prompt_tokens: int,
        *,
        keep: bool = True,
        activity: Activity = "compact",
        web_search: bool = False,
        thinking_shown: bool = True,
    ) -> None:
        super().__init__(model, stops, prompt_tokens, keep=keep, activity=activity, web_search=web_search)
        self._id = message_id()
        self._searches = 0
        self._thinking_shown = thinking_shown

    def on_tool_activity(self, event: ToolActivity) -> bytes:
        """A client that asked for web search sees claude.ai's searches as Anthropic's API shows
        them: a `server_tool_use` block, then a `web_search_tool_result` block."""
        if not (self.web_search and event.name == "web_search"):
            return super().on_tool_activity(event)
        parsed = parse_arguments(event.input)
        payload = {
            "type": "server_tool_use",
            "id": "srvtoolu_" + event.id.removeprefix("toolu_"),
            "name": "web_search",
            "input": {},
        }
        out, block = self._raw_block("server_tool_use", {**payload, "input": parsed if isinstance(parsed, dict) else {}})
        self._searches += 1
        out += _event("content_block_start", {"type": "content_block_start", "index": block.index, "content_block": payload})
        out += self._delta(block, {"type": "input_json_delta", "partial_json": orjson.dumps(block.payload["input"]).decode()})
        return out + self.on_block_stop(block)

    def on_tool_outcome(self, event: ToolOutcome) -> bytes:
        if not (self.web_search and event.name == "web_search"):
            return b""
        results = [
            {
                "type": "web_search_result",
                "url": r["url"],
                "title": r["title"],
                "page_age": r["page_age"] or None,
                "encrypted_content": "",
            }
            for r in event.results
        ]
        payload = {
            "type": "web_search_tool_result",
            "tool_use_id": "srvtoolu_" + event.tool_id.removeprefix("toolu_"),
            "content": results,
        }
        out, block = self._raw_block("server_tool_result", payload)
        out += _event("content_block_start", {"type": "content_block_start", "index": block.index, "content_block": payload})
        return out + self.on_block_stop(block)

    def on_citation(self, block: Block, citation: Citation) -> bytes:
        return self._delta(block, {"type": "citations_delta", "citation": _location(citation)})

    def _server_usage(self) -> dict[str, Any]:
        """How many searches claude.ai ran (Claude Code reports it), when the client asked for them."""
        return {"server_tool_use": {"web_search_requests": self._searches}} if self._searches else {}

    def on_start(self) -> bytes:
        message = {**self._message([], None, None), "usage": _usage(self.prompt_tokens, 1)}
        return _event("message_start", {"type": "message_start", "message": message}) + _event("ping", {"type": "ping"})

    def on_block_start(self, block: Block) -> bytes:
        start = {"type": "text", "text": ""} if block.kind == "text" else {"type": "thinking", "thinking": "", "signature": ""}
        return _event("content_block_start", {"type": "content_block_start", "index": block.index, "content_block": start})

    def on_delta(self, block: Block, text: str) -> bytes:
        if block.kind == "text":
            return self._delta(block, {"type": "text_delta", "text": text})
        return self._delta(block, {"type": "thinking_delta", "thinking": text}) if self._thinking_shown else b""

    def on_block_stop(self, block: Block) -> bytes:
        return _event("content_block_stop", {"type": "content_block_stop", "index": block.index})

    def on_tool_call(self, block: Block) -> bytes:
        call = block.call
        assert call is not None
        start = {"type": "tool_use", "id": "toolu_" + call.id, "name": call.name, "input": {}}
        out = _event("content_block_start", {"type": "content_block_start", "index": block.index, "content_block": start})
        half = len(call.arguments) // 2
        for piece in (call.arguments[:half], call.arguments[half:]):
            if piece:
                out += self._delta(block, {"type": "input_json_delta", "partial_json": piece})
        return out + self.on_block_stop(block)

    def on_finish(self, stop: str) -> bytes:
        delta = {"stop_reason": stop, "stop_sequence": self.stop_sequence}
        out = _event(
            "message_delta",
            {"type": "message_delta", "delta": delta, "usage": {"output_tokens": self.output_tokens, **self._server_usage()}},
        )
        return out + _event("message_stop", {"type": "message_stop"})

    def error(self, exc: RelayError) -> bytes:
        return _event("error", error_body(exc))

    def result(self) -> dict[str, Any]:
        content = [_block_object(b, self._thinking_shown) for b in self.blocks]
        return {
            **self._message(content, self.stop or "end_turn", self.stop_sequence),
            "usage": {**_usage(self.prompt_tokens, self.output_tokens), **self._server_usage()},
        }

    def _message(self, content: list[dict[str, Any]], stop: str | None, sequence: str | None) -> dict[str, Any]:
        return {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": sequence,
        }

    @staticmethod
    def _delta(block: Block, delta: dict[str, Any]) -> bytes:
        return _event("content_block_delta", {"type": "content_block_delta", "index": block.index, "delta": delta})


def _location(citation: Citation) -> dict[str, Any]:
    return {
        "type": "web_search_result_location",
        "url": citation.url,
        "title": citation.title,
        "cited_text": citation.cited_text,
        "encrypted_index": "",
    }


def _block_object(block: Block, thinking_shown: bool) -> dict[str, Any]:
    if block.payload:
        return block.payload
    if block.call is not None:
        return {
            "type": "tool_use",
            "id": "toolu_" + block.call.id,
            "name": block.call.name,
            "input": orjson.loads(block.call.arguments),
        }
    if block.kind == "thinking":
        return {"type": "thinking", "thinking": block.text if thinking_shown else "", "signature": ""}
    text: dict[str, Any] = {"type": "text", "text": block.text}
    if block.citations:
        text["citations"] = [_location(c) for c in block.citations]
    return text
