"""claude.ai's completion stream read into reply events.

Unknown events and fields are ignored (logged at debug) so that upstream changes degrade
gracefully instead of breaking answers.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import orjson
from loguru import logger

from ..jsontext import loads
from ..reply import Cite, Finish, LimitReached, QuotaSeen, ReplyEvent, Text, Thinking, ToolActivity, ToolCall, ToolOutcome
from ..sse import SSEEvent, blocks
from .drift import DRIFT, KNOWN_BLOCKS, KNOWN_DELTAS, KNOWN_EVENTS
from .failures import classify_stream_error
from .webapi import parse_windows


@dataclass(slots=True)
class _Block:
    kind: str
    name: str = ""
    id: str = ""
    parts: list[str] = field(default_factory=list)
    # Thinking: which form its text came in first (full thinking or summaries); the other is not shown.
    form: str = ""


def _index(data: dict[str, Any], default: int = -1) -> int:
    value = data.get("index", default)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _results(content: Any) -> list[dict[str, str]]:
    """Search results from a tool_result block's content: those with a URL, as url/title/page age."""
    out = []
    for item in content if isinstance(content, list) else []:
        if isinstance(item, dict) and isinstance(item.get("url"), str):
            meta = item.get("metadata") if isinstance(item.get("metadata"), dict) else {}
            age = item.get("page_age") or meta.get("page_age") or ""  # type: ignore[union-attr]
            out.append({"url": item["url"], "title": str(item.get("title") or ""), "page_age": str(age)})
    return out


def render_artifact(raw_input: str) -> str:
    """An artifact claude.ai made, as markdown: its content in a code block, never raw JSON."""
    try:
        args = loads(raw_input) if raw_input.strip() else {}
    except ValueError:
        args = {}
    if not isinstance(args, dict):
        args = {}
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
    return f"\n\n**{title}**\n\n"  # an artifact command with nothing to show


def _artifact_language(kind: str) -> str:
    return {
        "text/html": "html",
        "text/markdown": "markdown",
        "image/svg+xml": "svg",
        "application/vnd.ant.mermaid": "mermaid",
    }.get(kind, "")


# The bulk of every answer, as claude.ai sends it: a text delta in its own event. Read with one
# regular expression, these skip the event and JSON parsing; a run of them is decoded in one go
# (the bodies of JSON strings joined are the body of one JSON string). Any other shape, padding or
# field order takes the general path and gives the same result.
_TEXT_DELTA = re.compile(
    rb'event: content_block_delta\ndata: \{"type": ?"content_block_delta", ?"index": ?\d+, ?'
    rb'"delta": ?\{"type": ?"text_delta", ?"text": ?"([^"\\\n]*(?:\\.[^"\\\n]*)*)"\}\} *(?=\n\n|\Z)'
)
# What lies between two text deltas of one run: nothing but the blank line that ends a block.
_SEPARATORS = frozenset({b"", b"\n\n"})


def _whole_blocks(parts: list[bytes]) -> bool:
    """Whether every text delta `split` found starts a block (what precedes it ends one): an
    `event:` line in the middle of a block belongs to that block."""
    first, middle = parts[0], parts[2:-1:2]
    if first and not first.endswith(b"\n\n"):
        return False
    return _SEPARATORS.issuperset(middle) or all(m.endswith(b"\n\n") for m in middle)


def _unescape(bodies: list[bytes]) -> str:
    """The text of JSON string bodies; a lone surrogate (never valid text) becomes U+FFFD."""
    joined = b'"' + b"".join(bodies) + b'"'
    try:
        return str(orjson.loads(joined))
    except orjson.JSONDecodeError:
        return str(json.loads(joined)).encode("utf-8", "replace").decode()


def _json(event: SSEEvent) -> Any:
    try:
        return orjson.loads(event.data)
    except orjson.JSONDecodeError:
        logger.debug("upstream sent a non-JSON event {}", event.event)
        return None


class EventReader:
    """Reads one completion stream's SSE events into reply events; raises UpstreamFailure on `error`."""

    __slots__ = ("_blocks", "_stop_reason", "_tool_calls", "finished")

    def __init__(self, *, tool_calls: bool = False) -> None:
        self._blocks: dict[int, _Block] = {}
        self._stop_reason = "end_turn"
        # claude.ai's own tool blocks (artifacts, search) are its activity; the Anthropic API's
        # tool_use blocks, read from a fallback provider, are the client's function calls.
        self._tool_calls = tool_calls
        self.finished = False

    def read(self, region: bytes) -> list[ReplyEvent]:
        """The reply events of complete SSE blocks (see `SSEDecoder.take`): one split finds the
        plain text deltas (whole blocks only), whose bodies are decoded a run at a time; the blocks
        between them go through `feed_all`."""
        parts = _TEXT_DELTA.split(region)
        if len(parts) == 1 or not _whole_blocks(parts):
            return self.feed_all(blocks(region)) if region else []
        if _SEPARATORS.issuperset(parts[0::2]):  # the usual read: text deltas and nothing else
            return [Text(_unescape(parts[1::2]))]
        out: list[ReplyEvent] = []
        escaped: list[bytes] = []
        for i in range(0, len(parts), 2):
            between = parts[i]
            if between not in _SEPARATORS:
                if escaped:
                    self._merge(out, [Text(_unescape(escaped))])
                    escaped = []
                self._merge(out, self.feed_all(blocks(between)))
            if i + 1 < len(parts):
                escaped.append(parts[i + 1])
        if escaped:
            self._merge(out, [Text(_unescape(escaped))])
        return out

    @staticmethod
    def _merge(out: list[ReplyEvent], items: list[ReplyEvent]) -> None:
        """Append, joining text to text (and thinking to thinking) at the seam."""
        for item in items:
            last = out[-1] if out else None
            if isinstance(last, Text) and type(item) is Text:
                out[-1] = Text(last.text + item.text)
            elif isinstance(last, Thinking) and type(item) is Thinking:
                out[-1] = Thinking(last.text + item.text)
            else:
                out.append(item)

    def feed_all(self, events: list[SSEEvent]) -> list[ReplyEvent]:
        """The reply events of what one network read brought, adjacent text joined into one event
        (and adjacent thinking likewise): under load one read holds dozens of deltas, and each
        event costs a frame on every later step. Text deltas, the bulk of every answer, are read
        here without the general dispatch."""
        out: list[ReplyEvent] = []
        run: list[str] = []  # texts of the same kind, waiting to be joined
        kind: type[Text | Thinking] | None = None
        for event in events:
            data = _json(event)
            if type(data) is dict and data.get("type") == "content_block_delta":
                delta = data.get("delta")
                if type(delta) is dict and delta.get("type") == "text_delta" and type(text := delta.get("text")) is str:
                    if kind is not Text:
                        if run and kind is not None:
                            out.append(kind("".join(run)))
                            run = []
                        kind = Text
                    run.append(text)
                    continue
            for item in self._dispatch(data, event):
                if isinstance(item, (Text, Thinking)) and type(item) is kind:
                    run.append(item.text)
                    continue
                if run and kind is not None:
                    out.append(kind("".join(run)))
                    run = []
                if isinstance(item, (Text, Thinking)):
                    kind = Text if isinstance(item, Text) else Thinking
                    run.append(item.text)
                else:
                    kind = None
                    out.append(item)
        if run and kind is not None:
            out.append(kind("".join(run)))
        return out

    def feed(self, event: SSEEvent) -> list[ReplyEvent]:
        return self._dispatch(_json(event), event)

    def _dispatch(self, data: Any, event: SSEEvent) -> list[ReplyEvent]:
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
            if not isinstance(limit, dict):
                return []
            out: list[ReplyEvent] = []
            if windows := parse_windows(limit.get("windows")):
                out.append(QuotaSeen(windows))
            if limit.get("type") == "exceeded_limit":
                resets = limit.get("resetsAt")
                out.append(LimitReached(float(resets) if isinstance(resets, (int, float)) else None))
            return out
        if kind == "error" or "error" in data and "completion" not in data:
            err = data.get("error") or {}
            if not isinstance(err, dict):
                err = {"message": str(err)}
            raise classify_stream_error(str(err.get("type") or ""), str(err.get("message") or ""))
        if "completion" in data:  # legacy rendering: every event carries a text chunk
            return self._legacy(data)
        if kind not in KNOWN_EVENTS:
            DRIFT.note("event", str(kind), event.data)
        return []

    def _start(self, data: dict[str, Any]) -> list[ReplyEvent]:
        block = data.get("content_block")
        block = block if isinstance(block, dict) else {}
        kind = str(block.get("type", ""))
        opened = self._blocks[_index(data, len(self._blocks))] = _Block(
            kind, str(block.get("name", "")), str(block.get("id", ""))
        )
        if kind not in KNOWN_BLOCKS:
            DRIFT.note("content_block", kind, block)
        if kind == "text" and block.get("text"):
            return [Text(str(block["text"]))]
        if kind == "tool_result":
            return [ToolOutcome(str(block.get("tool_use_id", "")), str(block.get("name", "")), _results(block.get("content")))]
        if kind == "thinking":
            if block.get("thinking"):
                opened.form = "full"
                return [Thinking(str(block["thinking"]))]
            summaries = [str(s.get("summary")) for s in block.get("summaries") or [] if isinstance(s, dict) and s.get("summary")]
            if summaries:
                opened.form = "summary"
                return [Thinking("\n".join(summaries))]
        return []

    def _delta(self, data: dict[str, Any]) -> list[ReplyEvent]:
        delta = data.get("delta")
        delta = delta if isinstance(delta, dict) else {}
        kind = delta.get("type")
        if kind == "text_delta":
            return [Text(str(delta.get("text", "")))]
        if kind in ("thinking_delta", "thinking_summary_delta"):
            return self._thinking(_index(data), kind, delta)
        if kind == "input_json_delta":
            block = self._blocks.get(_index(data))
            if block is not None:
                block.parts.append(str(delta.get("partial_json", "")))
        if kind == "citation_start_delta":
            cite = delta.get("citation")
            if isinstance(cite, dict) and isinstance(cite.get("url"), str) and cite.get("uuid"):
                return [Cite(str(cite["uuid"]), cite["url"], str(cite.get("title") or ""))]
        if kind == "citation_end_delta" and delta.get("citation_uuid"):
            return [Cite(str(delta["citation_uuid"]))]
        if kind not in KNOWN_DELTAS:
            DRIFT.note("delta", str(kind or ""), delta)
        return []

    def _thinking(self, index: int, kind: str, delta: dict[str, Any]) -> list[ReplyEvent]:
        """Full thinking, or its summaries where no full thinking comes; never both for a block.

        A summary may arrive after its block was closed; it is still thinking and shown as such."""
        form = "full" if kind == "thinking_delta" else "summary"
        if form == "full":
            text = delta.get("thinking")
        else:
            summary = delta.get("summary")
            text = summary.get("summary") if isinstance(summary, dict) else summary
        if not isinstance(text, str) or not text:
            return []
        block = self._blocks.get(index)
        if block is not None:
            if block.form and block.form != form:
                return []
            block.form = form
        return [Thinking(text)]

    def _stop(self, data: dict[str, Any]) -> list[ReplyEvent]:
        block = self._blocks.get(_index(data))
        if block is None or block.kind != "tool_use":
            return []
        del self._blocks[_index(data)]
        raw = "".join(block.parts)
        if self._tool_calls:
            return [ToolCall(block.id.removeprefix("toolu_"), block.name, raw or "{}")]
        if block.name == "artifacts":
            return [Text(render_artifact(raw))]
        return [ToolActivity(block.id, block.name, raw)]

    def _legacy(self, data: dict[str, Any]) -> list[ReplyEvent]:
        out: list[ReplyEvent] = []
        if data.get("completion"):
            out.append(Text(str(data["completion"])))
        if data.get("stop_reason"):
            self.finished = True
            reason = str(data["stop_reason"])
            out.append(Finish("end_turn" if reason == "stop_sequence" else reason))
        return out
