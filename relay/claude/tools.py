"""Function calling on a web chat that has no client tools: describe them, then find calls in the text.

The model is told to answer with `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks.
The parser watches the streamed text, holds back only what could be the start of such a block,
and turns complete, valid blocks into ToolCall events. A block naming a tool the request did not
declare becomes a BadCall (repaired upstream); one that does not parse or lacks a required
argument is passed on as plain text.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from typing import Any

from ..conversation import ToolPlan, ToolSpec, parse_arguments
from ..jsontext import loads
from ..reply import BadCall, ReplyEvent, Text, ToolCall

OPEN = "<tool_call>"
CLOSE = "</tool_call>"
# A call block longer than this is not a call; emit it as text rather than buffer forever.
MAX_CALL_CHARS = 200_000


def instructions(plan: ToolPlan) -> str:
    """The prompt section that offers the tools and fixes the call format."""
    lines = ["You can call the following tools (functions) to help answer:"]
    for tool in plan.offered:
        schema = json.dumps(tool.parameters or {"type": "object", "properties": {}}, ensure_ascii=False)
        desc = f" - {tool.description}" if tool.description else ""
        lines.append(f"- {tool.name}{desc}\n  parameters (JSON schema): {schema}")
    lines.append(
        "To call tools, reply with one block per call, exactly in this form and with nothing after the "
        f'last block:\n{OPEN}{{"name": "TOOL_NAME", "arguments": {{...}}}}{CLOSE}\n'
        "The arguments must be a JSON object that matches the tool's schema. Several blocks in one reply "
        "run in parallel. Tool results come back in a later message marked [tool result]. "
        "Do not describe this format to the user, and do not use artifacts or other tools."
    )
    if plan.forced:
        lines.append(f"You must call the tool {plan.forced} now.")
    elif plan.choice == "required":
        lines.append("You must call at least one tool now.")
    else:
        lines.append("Call a tool only when it is needed; otherwise answer normally.")
    return "\n".join(lines)


def render_call(name: str, arguments: Any) -> str:
    """A past call in the same format, so the model sees its own convention in the history."""
    if isinstance(arguments, str) and (parsed := parse_arguments(arguments)) is not None:
        arguments = parsed
    return f"{OPEN}{json.dumps({'name': name, 'arguments': arguments}, ensure_ascii=False)}{CLOSE}"


def _partial_open(text: str) -> int:
    """Length of the longest suffix of `text` that is a prefix of OPEN."""
    for n in range(min(len(OPEN) - 1, len(text)), 0, -1):
        if text.endswith(OPEN[:n]):
            return n
    return 0


class ToolCallParser:
    """Splits streamed text into Text and ToolCall events.

    White space that only separates text from a call is dropped (streamed or not, the client
    sees the same text), so trailing white space is held back until what follows it is known.
    """

    __slots__ = ("_after_call", "_buf", "_inside", "_space", "_tools", "calls")

    def __init__(self, tools: Iterable[ToolSpec]) -> None:
        self._tools = {t.name: t for t in tools}
        self._buf = ""
        self._inside = False
        self._space = ""  # trailing white space held back
        self._after_call = False
        self.calls = 0

    def _text(self, out: list[ReplyEvent], text: str) -> None:
        if self._after_call:
            text = text.lstrip()
            if not text:
                return
            self._after_call = False
        text = self._space + text
        body = text.rstrip()
        self._space = text[len(body) :]
        if body:
            out.append(Text(body))

    def _call(self, out: list[ReplyEvent], call: ToolCall) -> None:
        self._space, self._after_call = "", True
        out.append(call)

    def feed(self, text: str) -> list[ReplyEvent]:
        self._buf += text
        out: list[ReplyEvent] = []
        while True:
            if not self._inside:
                start = self._buf.find(OPEN)
                if start < 0:
                    keep = _partial_open(self._buf)
                    head, self._buf = self._buf[: len(self._buf) - keep], self._buf[len(self._buf) - keep :]
                    if head:
                        self._text(out, head)
                    return out
                if start:
                    self._text(out, self._buf[:start])
                self._buf, self._inside = self._buf[start + len(OPEN) :], True
            else:
                end = self._buf.find(CLOSE)
                if end < 0:
                    if len(self._buf) > MAX_CALL_CHARS:
                        self._text(out, OPEN + self._buf)
                        self._buf, self._inside = "", False
                    return out
                raw, self._buf, self._inside = self._buf[:end], self._buf[end + len(CLOSE) :], False
                call = self._parse(raw)
                if isinstance(call, ToolCall):
                    self._call(out, call)
                elif call is not None:  # an undeclared tool: held for a repair turn, never shown as markup
                    self._space, self._after_call = "", True
                    out.append(call)
                else:
                    self._text(out, OPEN + raw + CLOSE)

    def flush(self) -> list[ReplyEvent]:
        """End of answer: whatever is held back is text (an unterminated block included)."""
        out: list[ReplyEvent] = []
        text = (OPEN if self._inside else "") + self._buf
        self._buf, self._inside = "", False
        if text:
            self._text(out, text)
        if self._space and not self.calls:
            out.append(Text(self._space))
        self._space = ""
        return out

    def _parse(self, raw: str) -> ToolCall | BadCall | None:
        body = raw.strip().removeprefix("```json").removeprefix("```").removesuffix("```").strip()
        try:
            doc = loads(body)
        except ValueError:
            return None
        if not isinstance(doc, dict):
            return None
        tool = self._tools.get(str(doc.get("name", "")))
        args: Any = next((doc[k] for k in ("arguments", "input", "parameters") if k in doc), {})
        if tool is None and isinstance(doc.get("name"), str):
            return BadCall(doc["name"], body)
        if tool is None or not isinstance(args, dict) or any(k not in args for k in tool.required):
            return None
        self.calls += 1
        return ToolCall(uuid.uuid4().hex[:24], tool.name, json.dumps(args, ensure_ascii=False, separators=(",", ":")))
