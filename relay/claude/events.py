"""claude.ai's completion stream read into reply events.

Unknown events and fields are ignored (logged at debug) so that upstream changes degrade
gracefully instead of breaking answers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import orjson
from loguru import logger

from ..reply import Finish, LimitReached, ReplyEvent, Text, Thinking, ToolCall
from ..sse import SSEEvent
from .failures import classify_stream_error


@dataclass(slots=True)
class _Block:
    kind: str
    name: str = ""
    id: str = ""
    parts: list[str] = field(default_factory=list)


def render_tool_block(name: str, raw_input: str) -> str:
    """Markdown for an upstream tool_use block (artifacts, web search, ...), never raw JSON fragments."""
    try:
        args = json.loads(raw_input) if raw_input.strip() else {}
    except ValueError:
        args = {"input": raw_input}
    if not isinstance(args, dict):
        args = {"input": args}
    if name == "artifacts":
        title = args.get("title") or args.get("id") or "artifact"
        if "content" in args:
            lang = args.get("language") or _artifact_language(str(args.get("type", "")))
            return f"\n\n**{title}**\n\n```{lang}\n{str(args['content']).rstrip()}\n```\n\n"
        if "new_str" in args:
            return (
                f"\n\n**{title}** (update)\n\n```diff\n"
                + "".join(f"- {ln}\n" for ln in str(args.get("old_str", "")).splitlines())
                + "".join(f"+ {ln}\n" for ln in str(args["new_str"]).splitlines())
                + "```\n\n"
            )
    if name == "web_search" and "query" in args:
        return f"\n\n_Searching the web: {args['query']}_\n\n"
    return f"\n\n**{name or 'tool'}**\n\n```json\n{json.dumps(args, ensure_ascii=False, indent=2)}\n```\n\n"


def _artifact_language(kind: str) -> str:
    return {"text/html": "html", "text/markdown": "markdown", "image/svg+xml": "svg", "application/vnd.ant.mermaid": "mermaid"}.get(
        kind, ""
    )


class EventReader:
    """Reads one completion stream's SSE events into reply events; raises UpstreamFailure on `error`."""

    __slots__ = ("_blocks", "_stop_reason", "_tool_calls", "finished")

    def __init__(self, *, tool_calls: bool = False) -> None:
        self._blocks: dict[int, _Block] = {}
        self._stop_reason = "end_turn"
        # claude.ai's own tool blocks (artifacts, search) are shown as markdown; the Anthropic API's
        # tool_use blocks, read from a fallback provider, are the client's function calls.
        self._tool_calls = tool_calls
        self.finished = False

    def feed(self, event: SSEEvent) -> list[ReplyEvent]:
        try:
            data = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            logger.debug("upstream sent a non-JSON event {}", event.event)
            return []
        if not isinstance(data, dict):
            return []
        kind = data.get("type") or event.event
        if kind == "content_block_delta":
            return self._delta(data)
        if kind == "content_block_start":
            return self._start(data)
        if kind == "content_block_stop":
            return self._stop(data)
        if kind == "message_delta":
            reason = (data.get("delta") or {}).get("stop_reason")
            if reason:
                self._stop_reason = str(reason)
            return []
        if kind == "message_stop":
            self.finished = True
            return [Finish(self._stop_reason)]
        if kind == "message_limit":
            limit = data.get("message_limit") or {}
            if limit.get("type") == "exceeded_limit":
                resets = limit.get("resetsAt")
                return [LimitReached(float(resets) if isinstance(resets, (int, float)) else None)]
            return []
        if kind == "error" or "error" in data and "completion" not in data:
            err = data.get("error") or {}
            if not isinstance(err, dict):
                err = {"message": str(err)}
            raise classify_stream_error(str(err.get("type") or ""), str(err.get("message") or ""))
        if "completion" in data:  # legacy rendering: every event carries a text chunk
            return self._legacy(data)
        if kind not in ("message_start", "ping"):
            logger.debug("ignoring upstream event {}", kind)
        return []

    def _start(self, data: dict[str, Any]) -> list[ReplyEvent]:
        block = data.get("content_block") or {}
        index = int(data.get("index", len(self._blocks)))
        kind = str(block.get("type", ""))
        self._blocks[index] = _Block(kind, str(block.get("name", "")), str(block.get("id", "")))
        if kind == "text" and block.get("text"):
            return [Text(str(block["text"]))]
        if kind == "thinking" and block.get("thinking"):
            return [Thinking(str(block["thinking"]))]
        return []

    def _delta(self, data: dict[str, Any]) -> list[ReplyEvent]:
        delta = data.get("delta") or {}
        kind = delta.get("type")
        if kind == "text_delta":
            return [Text(delta.get("text", ""))]
        if kind == "thinking_delta":
            return [Thinking(delta.get("thinking", ""))]
        if kind == "input_json_delta":
            block = self._blocks.get(int(data.get("index", -1)))
            if block is not None:
                block.parts.append(str(delta.get("partial_json", "")))
        return []

    def _stop(self, data: dict[str, Any]) -> list[ReplyEvent]:
        block = self._blocks.pop(int(data.get("index", -1)), None)
        if block is None or block.kind != "tool_use":
            return []
        raw = "".join(block.parts)
        if self._tool_calls:
            return [ToolCall(block.id.removeprefix("toolu_"), block.name, raw or "{}")]
        return [Text(render_tool_block(block.name, raw))]

    def _legacy(self, data: dict[str, Any]) -> list[ReplyEvent]:
        out: list[ReplyEvent] = []
        if data.get("completion"):
            out.append(Text(str(data["completion"])))
        if data.get("stop_reason"):
            self.finished = True
            reason = str(data["stop_reason"])
            out.append(Finish("end_turn" if reason == "stop_sequence" else reason))
        return out


