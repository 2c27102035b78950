"""Responses API answers kept in this process for `previous_response_id`: a least-recently-used
map bounded in count and in bytes, so that clients sending long conversations cannot grow it
without end."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

MAX_KEPT_ANSWERS = 1000
# Each answer is a whole conversation (up to MAX_BODY_SIZE again); a thousand long ones would
# otherwise hold gigabytes.
MAX_KEPT_BYTES = 256 * 1024 * 1024


class KeptAnswers:
    """Answer id -> (expiry, JSON text); the oldest used go first when either bound is passed."""

    __slots__ = ("_clock", "_entries", "_size", "max_bytes", "max_count", "ttl")

    def __init__(
        self, ttl: float, clock: Callable[[], float], max_count: int = MAX_KEPT_ANSWERS, max_bytes: int = MAX_KEPT_BYTES
    ) -> None:
        self.ttl = ttl
        self.max_count = max_count
        self.max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._size = 0

    def keep(self, answer_id: str, text: str) -> None:
        self.restore(answer_id, self._clock() + self.ttl, text)

    def restore(self, answer_id: str, expiry: float, text: str) -> None:
        """Keep `text` until `expiry` (an answer read back from the file keeps its own)."""
        self._drop(answer_id)
        self._entries[answer_id] = (expiry, text)
        self._size += len(text)
        while len(self._entries) > self.max_count or self._size > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def load(self, answer_id: str) -> str | None:
        kept = self._entries.get(answer_id)
        if kept is None or kept[0] <= self._clock():
            self._drop(answer_id)
            return None
        self._entries.move_to_end(answer_id)
        return kept[1]

    def snapshot(self, now: float) -> dict[str, list[float | str]]:
        """What is still fresh, as the answers file keeps it: id -> [expiry, text]."""
        return {k: [expiry, text] for k, (expiry, text) in self._entries.items() if expiry > now}

    def _drop(self, answer_id: str) -> None:
        kept = self._entries.pop(answer_id, None)
        if kept is not None:
            self._size -= len(kept[1])
