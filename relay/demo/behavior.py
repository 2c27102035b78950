"""How each fake account answers (its scripted behaviour) and what the fake records of each call."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Any

CLOUDFLARE_PAGE = b"<!DOCTYPE html><html><head><title>Just a moment...</title></head><body>challenge</body></html>"


@dataclass
class Behavior:
    """How one account answers. `mode` is one of MODES; text/thinking override the default answer."""

    mode: str = "ok"
    text: str | None = None
    thinking: str | None = None
    resets_at: float | None = None  # for rate_limited and limit_after
    drop_after: int = 3  # for drop: text chunks sent before the connection is cut
    chunk_delay: float | None = None
    first_delay: float = 0.0  # silence before the first content event
    accept_delay: float = 0.0  # time the completion takes before it creates the chat and answers
    usage: dict[str, float] | None = None  # starting quota use per window ("5h", "7d"), 0..1
    models: frozenset[str] | None = None  # the models the account's plan has (None: all)
    refuse_fields: frozenset[str] = frozenset()  # completion fields this account's claude.ai does not take
    thinking_form: str = "full"  # how thinking streams: full, summary (summaries only) or both
    interleave: bool = False  # thinking, text, thinking, text instead of thinking then text
    search: str | None = None  # a web search claude.ai runs when asked (tool_use + tool_result blocks, a citation)
    # What each answer adds to the 5-hour window (a fifth of that to the 7-day one); small, so that
    # benchmarks with thousands of answers do not use an account up.
    usage_step: float = 0.0001
    stop_reason: str = "end_turn"
    tool_block: tuple[str, dict[str, Any]] | None = None  # an upstream tool_use block (e.g. artifacts) after the text
    fail_calls: frozenset[str] = frozenset({"completion"})  # which calls the failure modes hit
    # Tests hold an answer at an exact moment: before its headers, and before its last events.
    hold_start: asyncio.Event | None = None
    hold_end: asyncio.Event | None = None


MODES = (
    "ok",
    "rate_limited",
    "invalid",
    "banned",
    "region",
    "cloudflare_302",
    "cloudflare_html",
    "overloaded",
    "server_error",
    "drop",
    "limit_after",
    "no_chat_org",
    "orgs_error_object",
    "hang",  # accepts the completion and never answers, not even headers
    "stall",  # starts the answer, then goes silent for good
    "reset",  # resets the connection before answering
    "garbage",  # answers 200 with an event stream of junk, then closes
    "unavailable",  # 503 with a plain-text body
    "drift",  # a normal answer with an event, a content block and a delta type relay does not know
    "new_error",  # 400 with an error type relay does not know
    "deep_json",  # 500 whose JSON body is nested deeper than Python's json module reads
)


@dataclass
class Call:
    """One request the fake received."""

    name: str
    method: str
    path: str
    session_key: str
    body: Any
    headers: dict[str, str]
    files: list[tuple[str, str, bytes]] = field(default_factory=list)


def org_for(key: str) -> str:
    """A stable organization id per sessionKey."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "fake-claude/" + key))
