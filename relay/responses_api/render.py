"""An answer as OpenAI Responses stream events and as one `response` object.

Each block of the answer becomes one output item: thinking a `reasoning` item (its text as a
summary), text a `message` item, a call a `function_call` item. Every event carries its
`sequence_number`; the stream opens with `response.created` and `response.in_progress` and ends
with `response.completed` (or `response.incomplete`, or `response.failed` after an error).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

import orjson

from ..conversation import freeform_input, parse_arguments
from ..errors import RelayError
from ..render import Activity, Block, Citation, Renderer
from ..reply import ToolCall
from ..sse import encode_event

# claude.ai stop reasons that leave an answer unfinished, as Responses' incomplete reasons.
_INCOMPLETE = {"max_tokens": "max_output_tokens", "refusal": "content_filter"}


def _annotation(citation: Citation) -> dict[str, Any]:
    return {
        "type": "url_citation",
        "url": citation.url,
        "title": citation.title,
        "start_index": citation.start,
        "end_index": citation.end,
    }


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


class ResponseRenderer(Renderer):
    """Blocks in, Responses items out; `echo` holds the request fields a response repeats."""

    def __init__(
        self,
        model: str,
        prompt_tokens: int,
        *,
        echo: dict[str, Any],
        names: dict[str, tuple[str | None, str]],
        kinds: Mapping[str, str] | None = None,
        activity: Activity = "compact",
    ) -> None:
        super().__init__(model, [], prompt_tokens, activity=activity)
        self.id = new_id("resp")
        self._created = int(time.time())
        self._echo = echo
        self._names = names  # offered tool name -> (namespace, function name)
        self._kinds = kinds or {}  # offered tools that are not functions: custom, tool_search
        self._seq = 0
        self._items: list[dict[str, Any]] = []
        self._error: dict[str, str] | None = None

    # -- events --------------------------------------------------------------------------------

    def _event(self, kind: str, **data: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self._seq, **data}
        self._seq += 1
        return encode_event(kind, orjson.dumps(payload).decode())

    def _item_event(self, kind: str, block: Block, **data: Any) -> bytes:
        return self._event(kind, output_index=block.index, item=dict(self._items[block.index]), **data)

    def on_start(self) -> bytes:
        snapshot = self._response("in_progress")
        return self._event("response.created", response=snapshot) + self._event("response.in_progress", response=snapshot)

    def on_block_start(self, block: Block) -> bytes:
        if block.kind == "thinking":
            reasoning: dict[str, Any] = {"type": "reasoning", "id": new_id("rs"), "summary": [], "status": "in_progress"}
            self._items.append(reasoning)
            part = {"type": "summary_text", "text": ""}
            return self._item_event("response.output_item.added", block) + self._event(
                "response.reasoning_summary_part.added", **self._at(block), summary_index=0, part=part
            )
        message: dict[str, Any] = {
            "type": "message",
            "id": new_id("msg"),
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        self._items.append(message)
        empty: dict[str, Any] = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        return self._item_event("response.output_item.added", block) + self._event(
            "response.content_part.added", **self._at(block), content_index=0, part=empty
        )

    def on_delta(self, block: Block, text: str) -> bytes:
        if block.kind == "thinking":
            return self._event("response.reasoning_summary_text.delta", **self._at(block), summary_index=0, delta=text)
        return self._event("response.output_text.delta", **self._at(block), content_index=0, delta=text, logprobs=[])

    def on_block_stop(self, block: Block) -> bytes:
        text = block.text
        item = self._items[block.index]
        item["status"] = "completed"
        if block.kind == "thinking":
            part: dict[str, Any] = {"type": "summary_text", "text": text}
            item["summary"] = [part]
            out = self._event("response.reasoning_summary_text.done", **self._at(block), summary_index=0, text=text)
            out += self._event("response.reasoning_summary_part.done", **self._at(block), summary_index=0, part=part)
        else:
            part = {"type": "output_text", "text": text, "annotations": [_annotation(c) for c in block.citations], "logprobs": []}
            item["content"] = [part]
            out = self._event("response.output_text.done", **self._at(block), content_index=0, text=text, logprobs=[])
            out += self._event("response.content_part.done", **self._at(block), content_index=0, part=part)
        return out + self._item_event("response.output_item.done", block)

    def on_tool_call(self, block: Block) -> bytes:
        call = block.call
        assert call is not None
        kind = self._kinds.get(call.name)
        if kind == "custom":
            return self._custom_call(block, call)
        if kind == "tool_search":
            return self._tool_search_call(block, call)
        namespace, name = self._names.get(call.name, (None, call.name))
        item: dict[str, Any] = {"type": "function_call", "id": new_id("fc"), "call_id": "call_" + call.id, "name": name}
        if namespace:
            item["namespace"] = namespace
        self._items.append({**item, "arguments": "", "status": "in_progress"})
        out = self._item_event("response.output_item.added", block)
        out += self._event("response.function_call_arguments.delta", **self._at(block), delta=call.arguments)
        out += self._event("response.function_call_arguments.done", **self._at(block), name=name, arguments=call.arguments)
        self._items[block.index] = {**item, "arguments": call.arguments, "status": "completed"}
        return out + self._item_event("response.output_item.done", block)

    def _custom_call(self, block: Block, call: ToolCall) -> bytes:
        """A freeform tool's call: its raw text as `input`, streamed as input deltas."""
        text = freeform_input(call.arguments)
        item: dict[str, Any] = {"type": "custom_tool_call", "id": new_id("ctc"), "call_id": "call_" + call.id, "name": call.name}
        self._items.append({**item, "input": "", "status": "in_progress"})
        out = self._item_event("response.output_item.added", block)
        out += self._event("response.custom_tool_call_input.delta", **self._at(block), delta=text)
        out += self._event("response.custom_tool_call_input.done", **self._at(block), input=text)
        self._items[block.index] = {**item, "input": text, "status": "completed"}
        return out + self._item_event("response.output_item.done", block)

    def _tool_search_call(self, block: Block, call: ToolCall) -> bytes:
        """A search for more tools, which the client runs (`execution: client`)."""
        args = parse_arguments(call.arguments)
        item: dict[str, Any] = {
            "type": "tool_search_call",
            "id": new_id("ts"),
            "call_id": "call_" + call.id,
            "execution": "client",
        }
        self._items.append({**item, "arguments": args if isinstance(args, dict) else {}, "status": "in_progress"})
        out = self._item_event("response.output_item.added", block)
        self._items[block.index] = {**self._items[block.index], "status": "completed"}
        return out + self._item_event("response.output_item.done", block)

    def on_citation(self, block: Block, citation: Citation) -> bytes:
        return self._event(
            "response.output_text.annotation.added",
            **self._at(block),
            content_index=0,
            annotation_index=len(block.citations) - 1,
            annotation=_annotation(citation),
        )

    def on_finish(self, stop: str) -> bytes:
        final = self.result()
        kind = "response.completed" if final["status"] == "completed" else "response.incomplete"
        return self._event(kind, response=final)

    def error(self, exc: RelayError) -> bytes:
        self._error = {"code": exc.code, "message": exc.message}
        return self._event("response.failed", response=self._response("failed"))

    # -- the response object --------------------------------------------------------------------

    def _at(self, block: Block) -> dict[str, Any]:
        return {"item_id": self._items[block.index]["id"], "output_index": block.index}

    def result(self) -> dict[str, Any]:
        reason = _INCOMPLETE.get(self.stop or "")
        return self._response("incomplete" if reason else "completed", reason)

    def _response(self, status: str, incomplete: str | None = None) -> dict[str, Any]:
        done = status in ("completed", "incomplete")
        return {
            "id": self.id,
            "object": "response",
            "created_at": self._created,
            "status": status,
            "completed_at": int(time.time()) if done else None,
            "error": self._error if status == "failed" else None,
            "incomplete_details": {"reason": incomplete} if incomplete else None,
            "model": self.model,
            "output": [dict(i) for i in self._items],
            "usage": self._usage() if done else None,
            **self._echo,
        }

    def _usage(self) -> dict[str, Any]:
        reasoning = sum(len(b.text) for b in self.blocks if b.kind == "thinking")
        return {
            "input_tokens": self.prompt_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": self.output_tokens,
            "output_tokens_details": {"reasoning_tokens": (reasoning + 3) // 4},
            "total_tokens": self.prompt_tokens + self.output_tokens,
        }

    @property
    def output_items(self) -> list[dict[str, Any]]:
        """The answer's items, as a later request's input would carry them."""
        return [dict(i) for i in self._items]
