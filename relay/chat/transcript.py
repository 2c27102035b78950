"""Canonical digests of a conversation, so that a request can be matched with the point where an
earlier answer left a claude.ai chat.

Each turn is reduced to what every client sends back the same way: its role, its text with
white space folded and `<think>` sections dropped, its tool calls by name and canonical
arguments, tool results by content, images and files by a hash of their bytes. Ids, cache
markers, signatures and thinking are left out. The digests chain: the digest after a turn covers
the request's scope (client key, model, thinking, tools) and every turn up to it.
"""

from __future__ import annotations

import hashlib

import orjson

from ..conversation import Chat, FilePart, ImagePart, PastCall, TextPart, ToolPlan, Turn
from ..reply import ReplyEvent, Text, ToolCall


def _drop_thinking(text: str) -> str:
    """Every `<think>...</think>` section replaced by a space, in one pass. A regex with a lazy
    `.*?` rescans the rest of the text from every opening tag that is never closed: a message of
    16,000 such tags held the event loop for 8 s."""
    parts: list[str] = []
    pos = 0
    while (start := text.find("<think>", pos)) >= 0:
        end = text.find("</think>", start + 7)
        if end < 0:
            break  # no later opening tag can be closed either
        parts += (text[pos:start], " ")
        pos = end + 8
    return "".join(parts) + text[pos:] if parts else text


def _text(text: str) -> str:
    """Thinking dropped, white space folded to single spaces. `str.split()` splits on the same
    characters as the regex `\\s` and is four times faster on a long answer, which is folded once
    per request for every turn of its transcript."""
    return " ".join(_drop_thinking(text).split())


def _arguments(arguments: str) -> str:
    try:
        return orjson.dumps(orjson.loads(arguments), option=orjson.OPT_SORT_KEYS).decode()
    except orjson.JSONDecodeError:
        return _text(arguments)


def _part(part: TextPart | ImagePart | FilePart) -> str:
    if isinstance(part, TextPart):
        return ""  # texts are joined and folded as one
    if isinstance(part, ImagePart):
        return "image:" + (hashlib.sha256(part.data).hexdigest() if part.data is not None else f"url:{part.url}")
    return "file:" + hashlib.sha256(part.data).hexdigest()


def turn_form(role: str, text: str, calls: list[PastCall], media: list[str], is_error: bool = False) -> bytes:
    """The canonical bytes of one turn."""
    doc = {
        "r": "user" if role == "tool" else role,
        "t": _text(text),
        "c": [[c.name, _arguments(c.arguments)] for c in calls],
        "m": media,
        "e": is_error,
    }
    return orjson.dumps(doc)


def _turn(turn: Turn) -> bytes:
    media = [m for m in (_part(p) for p in turn.parts) if m]
    return turn_form(turn.role, turn.text, turn.calls, media, turn.is_error)


def _tools(plan: ToolPlan | None) -> list[object]:
    if plan is None or not plan.active:
        return []
    return [[t.name, t.description, orjson.dumps(t.parameters, option=orjson.OPT_SORT_KEYS).decode()] for t in plan.tools]


def chain(chat: Chat, scope: str, model: str, thinking: bool) -> list[str]:
    """The digest after each turn of the chat (same length as its turns)."""
    head = orjson.dumps({"scope": scope, "model": model, "thinking": thinking, "tools": _tools(chat.tools)})
    state = hashlib.sha256(head).digest()
    digests = []
    for turn in chat.turns:
        state = hashlib.sha256(state + _turn(turn)).digest()
        digests.append(state.hex())
    return digests


def extend(digest: str, turn: bytes) -> str:
    """The digest after one more turn."""
    return hashlib.sha256(bytes.fromhex(digest) + turn).hexdigest()


class AnswerForm:
    """Folds an answer's events into the canonical form of the assistant turn a client will send
    back: its text (not its thinking) and its tool calls."""

    __slots__ = ("_calls", "_text")

    def __init__(self) -> None:
        self._text: list[str] = []
        self._calls: list[PastCall] = []

    def feed(self, batch: list[ReplyEvent]) -> None:
        for event in batch:
            if type(event) is Text:
                self._text.append(event.text)
            elif type(event) is ToolCall:
                self._calls.append(PastCall(event.id, event.name, event.arguments))

    def form(self) -> bytes:
        return turn_form("assistant", "".join(self._text), self._calls, [])
