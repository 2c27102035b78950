"""What claude.ai sent that relay does not know: event, content-block, delta and error types.

claude.ai changes its stream every few months without notice; counting the unknown shapes (and
logging the first of each) lets an operator see the change before users report broken answers.
The record is per process, like the upstream it watches."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from loguru import logger

# A changed upstream sends a handful of new types; a hostile or broken one could send endless
# names, so the record is bounded and names are cut.
MAX_TYPES = 200
MAX_NAME = 64
SAMPLE_CHARS = 300  # of the first instance's body, in the log line


@dataclass
class Unknown:
    kind: str  # event, content_block, delta, error
    name: str
    count: int
    first_seen: float

    def view(self) -> dict[str, object]:
        return {"kind": self.kind, "type": self.name, "count": self.count, "first_seen": self.first_seen}


class Drift:
    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], Unknown] = {}

    def note(self, kind: str, name: str, sample: bytes | str | dict[str, Any]) -> None:
        """Count one unknown shape; the first of each type is logged with its body cut short (the
        log sink removes secrets). The body is turned into text only for that one line."""
        name = name[:MAX_NAME] or "(none)"
        seen = self._seen.get((kind, name))
        if seen is not None:
            seen.count += 1
            return
        if len(self._seen) >= MAX_TYPES:
            return
        self._seen[(kind, name)] = Unknown(kind, name, 1, time.time())
        if isinstance(sample, bytes):
            sample = sample[: SAMPLE_CHARS * 4].decode("utf-8", "replace")
        elif isinstance(sample, dict):
            sample = json.dumps(sample, ensure_ascii=False)
        cut = sample if len(sample) <= SAMPLE_CHARS else sample[:SAMPLE_CHARS] + "…"
        logger.warning("claude.ai sent an unknown {} type {!r} (first seen; please report): {}", kind, name, cut)

    def entries(self) -> list[Unknown]:
        return sorted(self._seen.values(), key=lambda u: u.first_seen)


DRIFT = Drift()

# What relay reads or knowingly skips; anything else is drift.
KNOWN_EVENTS = frozenset(
    {
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
        "message_limit",
        "error",
    }
)
KNOWN_BLOCKS = frozenset({"text", "thinking", "redacted_thinking", "tool_use", "tool_result"})
KNOWN_DELTAS = frozenset(
    {
        "text_delta",
        "thinking_delta",
        "thinking_summary_delta",
        "signature_delta",
        "input_json_delta",
        "citation_start_delta",
        "citation_end_delta",
    }
)
KNOWN_ERRORS = frozenset(
    {
        "rate_limit_error",
        "permission_error",
        "authentication_error",
        "invalid_request_error",
        "not_found_error",
        "overloaded_error",
        "api_error",
        "request_too_large",
    }
)
